//! `--plot FILE.svg` or `FILE.png`: the run wave by wave, drawn with plotters.
//!
//! Text is laid out (and, for PNG, drawn) with ab_glyph from a font bundled
//! beside this file (DejaVu Sans Mono, `font/LICENSE`), so neither format needs
//! fontconfig or any font installed on the machine.

use crate::sim::WaveSample;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

const FONT: &[u8] = include_bytes!("font/DejaVuSansMono.ttf");
const SIZE: (u32, u32) = (1100, 900);

/// What the picture marks besides the waves: the dark waves (shaded) and the
/// wave after which the runtime was stopped and reopened (a dashed line).
#[derive(Debug, Clone)]
pub(crate) struct Marks {
    pub(crate) dark: Range<u32>,
    pub(crate) reopen_after: Option<u32>,
}

/// Draws `waves` into `path` (by its extension), with `marks`.
pub(crate) fn draw(path: &Path, waves: &[WaveSample], marks: &Marks) -> Result<(), String> {
    if waves.is_empty() {
        return Err("no wave to draw".into());
    }
    // Registering twice replaces the same bytes: harmless.
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "bundled font unreadable")?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => charts(SVGBackend::new(path, SIZE).into_drawing_area(), waves, marks),
        Some("png") => charts(BitMapBackend::new(path, SIZE).into_drawing_area(), waves, marks),
        _ => Err("the plot's file name must end in .svg or .png".into()),
    }
}

type Series<'a> = (&'a str, RGBColor, fn(&WaveSample) -> f64);

fn charts<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    waves: &[WaveSample],
    marks: &Marks,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled("rebalance, wave by wave (shaded: verifies cannot reach the dark shards; dashed: stop and reopen)", ("sans-serif", 20))
        .map_err(err)?;
    let panels = root.split_evenly((3, 1));
    let held: [Series; 1] = [("ghosts held", BLUE, |w| w.ghosts as f64)];
    let per_wave: [Series; 6] = [
        ("inserted", RGBColor(31, 119, 180), |w| w.inserted as f64),
        ("purged: refcount zero", RGBColor(44, 160, 44), |w| w.purged_refcount_zero as f64),
        ("purged: verified gone", RGBColor(148, 103, 189), |w| w.purged_verified as f64),
        ("purged: reclaimed", RGBColor(140, 86, 75), |w| w.purged_reclaimed as f64),
        ("redirected", RGBColor(255, 127, 14), |w| w.redirected as f64),
        ("inconclusive verifies", RED, |w| w.inconclusive as f64),
    ];
    let latency: [Series; 2] = [
        ("edge batch p50", RGBColor(31, 119, 180), |w| w.p50_us as f64 / 1e3),
        ("edge batch p99", RED, |w| w.p99_us as f64 / 1e3),
    ];
    panel(&panels[0], waves, marks, "ghosts held at the end of each wave", "ghosts", &held).map_err(err)?;
    panel(&panels[1], waves, marks, "ghosts per wave", "ghosts", &per_wave).map_err(err)?;
    latency_panel(&panels[2], waves, marks, &latency).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    waves: &[WaveSample],
    marks: &Marks,
    title: &str,
    unit: &str,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let last = waves.len() as f64;
    let top = waves.iter().flat_map(|w| series.iter().map(move |s| (s.2)(w))).fold(0.0, f64::max);
    // Headroom above the lines for the legend.
    let top = if top > 0.0 { top * if series.len() > 1 { 1.6 } else { 1.15 } } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..last + 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("wave")
        .y_desc(unit)
        .x_labels(waves.len().min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| group_f(*y))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    mark(&mut chart, marks, 0.0, top, false)?;
    for &(name, color, value) in series {
        let points = waves.iter().map(|w| (f64::from(w.wave) + 1.0, value(w)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// Batch latency on a log scale: p99 spikes (a reload, a busy machine) would
/// flatten p50 on a linear one.
fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    waves: &[WaveSample],
    marks: &Marks,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let last = waves.len() as f64;
    let values = || waves.iter().flat_map(|w| series.iter().map(move |s| (s.2)(w))).filter(|v| *v > 0.0);
    let low = values().fold(f64::INFINITY, f64::min).min(0.1) / 2.0;
    let top = values().fold(0.0, f64::max).max(1.0) * 8.0;
    let mut chart = ChartBuilder::on(area)
        .caption("edge batch latency per wave (log scale)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..last + 0.5, (low..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("wave")
        .y_desc("ms")
        .x_labels(waves.len().min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| if *y < 1.0 { format!("{y:.2}") } else { group_f(*y) })
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    mark(&mut chart, marks, low, top, true)?;
    for &(name, color, value) in series {
        let points = waves.iter().map(|w| (f64::from(w.wave) + 1.0, value(w).max(low)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// An axis value for reading: `12 345`, `1.5`.
fn group_f(v: f64) -> String {
    if v.abs() < 10.0 && v.fract() != 0.0 {
        return format!("{v:.1}");
    }
    crate::sim::group(v.round() as u64)
}

/// Shades the dark waves and dashes the reopen, from `low` to `top` on the y
/// axis (`log`: a log scale, whose dashes are spaced geometrically).
fn mark<DB: DrawingBackend, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    marks: &Marks,
    low: f64,
    top: f64,
    log: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    Y: Ranged<ValueType = f64>,
{
    let dark = &marks.dark;
    if !dark.is_empty() {
        let (from, to) = (f64::from(dark.start) + 0.5, f64::from(dark.end) + 0.5);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(from, low), (to, top)],
            BLACK.mix(0.08).filled(),
        )))?;
    }
    if let Some(after) = marks.reopen_after {
        // Between the wave it followed and the next, in 1-based waves; dashed by hand.
        let x = f64::from(after) + 1.5;
        let steps = 24u32;
        let y = |k: u32| {
            let f = f64::from(k) / f64::from(steps);
            if log { low * (top / low).powf(f) } else { low + (top - low) * f }
        };
        let dashes = (0..steps)
            .step_by(2)
            .map(|i| PathElement::new(vec![(x, y(i)), (x, y(i + 1))], BLACK.mix(0.6).stroke_width(1)));
        chart.draw_series(dashes)?;
    }
    Ok(())
}
