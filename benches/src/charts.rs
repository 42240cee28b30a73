//! SVG charts of a run: throughput per query (engine at each worker count beside the hand
//! loop) and latency percentiles per query, drawn with `plotters` (SVG backend only).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::latency::LatencyMeasurement;
use crate::runner::Measurement;

/// Chart size in pixels.
const SIZE: (u32, u32) = (1100, 480);

/// Bar colours, one per series.
const COLORS: [RGBColor; 4] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// One group of bars (a query, or a query at a worker count) and each series' value in it.
struct Group {
    label: String,
    values: Vec<Option<f64>>,
}

/// Draws grouped bars: each group gets one slot per series and a gap slot.
fn grouped_bars(
    path: &Path,
    caption: &str,
    y_desc: &str,
    series: &[String],
    groups: &[Group],
    log: bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let per = series.len() + 1;
    let slots = (groups.len() * per).max(1) as u32;
    let values = || {
        groups
            .iter()
            .flat_map(|g| g.values.iter().flatten().copied())
    };
    let top = values().fold(0.0f64, f64::max).max(1e-3) * 1.15;
    let bottom = values().filter(|v| *v > 0.0).fold(top, f64::min) / 2.0;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let label_of = |slot: u32| -> String {
        let (group, within) = (slot as usize / per, slot as usize % per);
        match groups.get(group) {
            Some(g) if within == series.len() / 2 => g.label.clone(),
            _ => String::new(),
        }
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70);
    // Linear and log axes are different types: draw through one generic helper.
    if log {
        let mut chart = builder
            .build_cartesian_2d((0..slots).into_segmented(), (bottom..top).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(slots as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(s) | SegmentValue::Exact(s) => label_of(*s),
                SegmentValue::Last => String::new(),
            })
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(&e))?;
        bars(&mut chart, series, groups, per, bottom).map_err(|e| err(&e))?;
    } else {
        let mut chart = builder
            .build_cartesian_2d((0..slots).into_segmented(), 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(slots as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(s) | SegmentValue::Exact(s) => label_of(*s),
                SegmentValue::Last => String::new(),
            })
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(&e))?;
        bars(&mut chart, series, groups, per, 0.0).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Segmented = plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordu32>;

fn bars<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<Segmented, Y>>,
    series: &[String],
    groups: &[Group],
    per: usize,
    floor: f64,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>>
where
    Y: Ranged<ValueType = f64>,
{
    for (k, name) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(groups.iter().enumerate().filter_map(|(g, group)| {
                let value = (*group.values.get(k)?)?;
                let slot = (g * per + k) as u32;
                Some(Rectangle::new(
                    [
                        (SegmentValue::Exact(slot), floor),
                        (SegmentValue::Exact(slot + 1), value.max(floor)),
                    ],
                    color.filled(),
                ))
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// Draws events/s per query: the hand loop and the engine at each worker count measured.
pub fn throughput_chart(measurements: &[Measurement], path: &Path) -> Result<()> {
    let mut workers: Vec<usize> = measurements.iter().map(|m| m.workers).collect();
    workers.sort_unstable();
    workers.dedup();
    let series: Vec<String> = workers
        .iter()
        .map(|&w| match w {
            0 => "hand loop".to_string(),
            1 => "engine, 1 worker".to_string(),
            w => format!("engine, {w} workers"),
        })
        .collect();
    let mut queries: Vec<_> = measurements.iter().map(|m| m.query).collect();
    queries.dedup();
    let groups: Vec<Group> = queries
        .iter()
        .map(|&q| Group {
            label: q.to_string(),
            values: workers
                .iter()
                .map(|&w| {
                    measurements
                        .iter()
                        .find(|m| m.query == q && m.workers == w)
                        .map(|m| m.events_per_second() / 1e6)
                })
                .collect(),
        })
        .collect();
    grouped_bars(
        path,
        "Throughput: M events/s per query (engine only)",
        "M events/s",
        &series,
        &groups,
        false,
    )
}

/// Draws p50, p99 and p99.9 latency (ms, log scale) per query and worker count.
pub fn latency_chart(runs: &[LatencyMeasurement], path: &Path) -> Result<()> {
    let series = ["p50", "p99", "p99.9"].map(String::from);
    let groups: Vec<Group> = runs
        .iter()
        .map(|m| Group {
            label: format!("{} ×{}", m.query, m.workers),
            values: vec![m.p50, m.p99, m.p999],
        })
        .collect();
    grouped_bars(
        path,
        "Latency beyond the window's wait, ms (log scale), at the offered rate",
        "ms",
        &series,
        &groups,
        true,
    )
}
