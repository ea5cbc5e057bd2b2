//! How settings a file cannot spell directly are written in TOML: a duration
//! that may be `"off"`, and a shard list that may be a range `"0..16"`.

use crate::ids::ShardId;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;

/// An optional duration: `"off"` is `None`, anything else a humantime duration.
/// TOML has no null, so `None` is written `"off"` and reads back as it.
pub(crate) mod duration_or_off {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            None => s.serialize_str("off"),
            Some(d) => humantime_serde::serialize(d, s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "off" {
            return Ok(None);
        }
        humantime_serde::re::humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| de::Error::custom(format!("{e} (write a duration such as \"60s\", or \"off\")")))
    }
}

/// A shard list: `[0, 1, 5]`, or a range `"0..16"` (end excluded) or
/// `"0..=15"` (end included). Written as a range when the ids are one.
pub(crate) mod shard_list {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<ShardId>),
        Range(String),
    }

    pub(crate) fn serialize<S: Serializer>(shards: &[ShardId], s: S) -> Result<S::Ok, S::Error> {
        let contiguous = shards.windows(2).all(|w| w[1].get().checked_sub(w[0].get()) == Some(1));
        match (shards.first(), shards.last()) {
            (Some(first), Some(last)) if contiguous && shards.len() > 1 => {
                format!("{first}..={last}").serialize(s)
            }
            _ => shards.serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ShardId>, D::Error> {
        match Form::deserialize(d)? {
            Form::List(ids) => Ok(ids),
            Form::Range(text) => parse_range(&text).map_err(de::Error::custom),
        }
    }

    pub(crate) fn parse_range(text: &str) -> Result<Vec<ShardId>, String> {
        let bad =
            || format!("shards: {text:?} is neither a list nor a range such as \"0..16\" or \"0..=15\"");
        let (start, end, inclusive) = match text.split_once("..=") {
            Some((a, b)) => (a, b, true),
            None => text.split_once("..").map(|(a, b)| (a, b, false)).ok_or_else(bad)?,
        };
        let start: u32 = start.trim().parse().map_err(|_| bad())?;
        let end: u32 = end.trim().parse().map_err(|_| bad())?;
        let end = if inclusive { end + 1 } else { end };
        if end > u32::from(u16::MAX) + 1 {
            return Err(format!("shards: {text:?} goes past shard id 65535"));
        }
        // An empty range is refused by `RuntimeConfig::validate` as no shards.
        Ok((start..end).map(|i| ShardId(i as u16)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::shard_list::parse_range;
    use crate::ids::ShardId;

    #[test]
    fn ranges_read_as_shard_lists() {
        let ids = |r: std::ops::Range<u16>| r.map(ShardId).collect::<Vec<_>>();
        assert_eq!(parse_range("0..16"), Ok(ids(0..16)));
        assert_eq!(parse_range("3..=5"), Ok(ids(3..6)));
        assert_eq!(parse_range(" 2 .. 4 "), Ok(ids(2..4)));
        assert_eq!(parse_range("0..=65535").map(|v| v.len()), Ok(65_536));
        assert_eq!(parse_range("4..2"), Ok(vec![]));
        for bad in ["0-16", "a..b", "0..65537", "..4", "-1..3"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }
}
