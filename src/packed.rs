//! `Packed<T>`: a list of `(id, T)` whose ids share one buffer, so it costs no allocation per item.

/// Items in push order; item `i`'s id ends at `ends[i].0` in `ids` and starts
/// where the previous one ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Packed<T> {
    ids: String,
    ends: Vec<(usize, T)>,
}

impl<T> Default for Packed<T> {
    fn default() -> Self {
        Self { ids: String::new(), ends: Vec::new() }
    }
}

impl<T> Packed<T> {
    pub(crate) fn with_capacity(items: usize, id_bytes: usize) -> Self {
        Self { ids: String::with_capacity(id_bytes), ends: Vec::with_capacity(items) }
    }

    pub(crate) fn push(&mut self, id: &str, value: T) {
        self.ids.push_str(id);
        self.ends.push((self.ids.len(), value));
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn get(&self, i: usize) -> (&str, &T) {
        let start = if i == 0 { 0 } else { self.ends[i - 1].0 };
        let (end, value) = &self.ends[i];
        (&self.ids[start..*end], value)
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &T)> + Clone + '_ {
        (0..self.ends.len()).map(move |i| self.get(i))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.ends.iter().map(|(_, v)| v)
    }

    pub(crate) fn reserve(&mut self, items: usize, id_bytes: usize) {
        self.ends.reserve(items);
        self.ids.reserve(id_bytes);
    }

    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.ends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_whole_and_in_order() {
        let mut p = Packed::with_capacity(2, 8);
        assert!(p.is_empty());
        p.push("ab", 1);
        p.push("ünï", 2);
        p.push("", 3);
        assert_eq!(p.len(), 3);
        assert_eq!(p.iter().map(|(id, &v)| (id, v)).collect::<Vec<_>>(), [("ab", 1), ("ünï", 2), ("", 3)]);
        assert_eq!(p.values().sum::<i32>(), 6);
        p.clear();
        assert_eq!(p, Packed::default());
    }
}
