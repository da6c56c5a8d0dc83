//! Loss curves: train and validation loss vs step, from the metrics JSONL log, as a PNG.

use lamina_core::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// `(step, loss)` points of one curve.
pub type Curve = Vec<(f64, f64)>;

/// Train and validation points `(step, loss)` read from a metrics log. Lines with
/// `"train_loss"` and/or `"val_loss"` count; others (and unreadable lines) are skipped.
pub fn read_log(jsonl: &Path) -> Result<(Curve, Curve)> {
    let text = std::fs::read_to_string(jsonl).map_err(|e| Error::io(jsonl, e))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(step) = v.get("step").and_then(|s| s.as_f64()) else { continue };
        if let Some(l) = v.get("train_loss").and_then(|x| x.as_f64()) {
            train.push((step, l));
        }
        if let Some(l) = v.get("val_loss").and_then(|x| x.as_f64()) {
            val.push((step, l));
        }
    }
    Ok((train, val))
}

/// Draws `png` from the metrics log `jsonl`.
pub fn plot_log(jsonl: &Path, png: &Path) -> Result<()> {
    let (train, val) = read_log(jsonl)?;
    if train.is_empty() && val.is_empty() {
        return Err(Error::InvalidInput(format!("{} has no train_loss or val_loss entries to plot", jsonl.display())));
    }
    // With labels first; if fonts are unavailable on this machine, without text.
    match draw(&train, &val, png, true) {
        Ok(()) => Ok(()),
        Err(_) => draw(&train, &val, png, false),
    }
}

fn draw(train: &[(f64, f64)], val: &[(f64, f64)], png: &Path, text: bool) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Other(format!("plot {}: {e}", png.display()));
    let all = train.iter().chain(val.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let root = BitMapBackend::new(png, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder.caption("loss", ("sans-serif", 24)).x_label_area_size(40).y_label_area_size(55);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad)).map_err(|e| err(&e))?;
    if text {
        chart.configure_mesh().x_desc("step").y_desc("loss").draw().map_err(|e| err(&e))?;
    } else {
        chart.configure_mesh().disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0).draw().map_err(|e| err(&e))?;
    }
    let train_series = chart.draw_series(LineSeries::new(train.iter().copied(), &BLUE)).map_err(|e| err(&e))?;
    if text {
        train_series.label("train").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    let val_series = chart.draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2))).map_err(|e| err(&e))?;
    if text {
        val_series.label("val").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    // Evaluations are sparse: mark each one.
    chart.draw_series(val.iter().map(|&(x, y)| Circle::new((x, y), 3, RED.filled()))).map_err(|e| err(&e))?;
    if text {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
