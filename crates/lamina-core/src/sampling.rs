//! The accepted ranges of sampling settings, checked in one place for every caller that
//! samples: the inference engine (`SamplingParams::validate`) and the trainer's
//! evaluation samples (`TrainConfig::validate`). Each check returns a message naming the
//! setting, its accepted range and the value it got.

use std::fmt::Display;

/// A value checked as f64 but shown as given (an f32 `1.01` prints as `1.01`).
pub trait Setting: Copy + Display + Into<f64> {}
impl<T: Copy + Display + Into<f64>> Setting for T {}

/// Softmax temperature: finite and ≥ 0 (0 = greedy).
pub fn check_temperature(t: impl Setting) -> Result<(), String> {
    let v: f64 = t.into();
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("temperature must be a finite number >= 0 (0 = greedy), got {t}"));
    }
    Ok(())
}

/// Nucleus threshold: in (0, 1] (1 = off).
pub fn check_top_p(p: impl Setting) -> Result<(), String> {
    let v: f64 = p.into();
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("top_p must be in (0, 1] (1 = off), got {p}"));
    }
    Ok(())
}

/// min-p threshold: in [0, 1] (0 = off).
pub fn check_min_p(p: impl Setting) -> Result<(), String> {
    let v: f64 = p.into();
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("min_p must be in [0, 1] (0 = off), got {p}"));
    }
    Ok(())
}

/// Multiplicative repetition penalty: finite and > 0 (1 = off).
pub fn check_repetition_penalty(p: impl Setting) -> Result<(), String> {
    let v: f64 = p.into();
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("repetition_penalty must be a finite number > 0 (1 = off), got {p}"));
    }
    Ok(())
}

/// An additive penalty (`frequency_penalty`, `presence_penalty`): finite.
pub fn check_additive_penalty(name: &str, p: impl Setting) -> Result<(), String> {
    if !p.into().is_finite() {
        return Err(format!("{name} must be a finite number, got {p}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_range() {
        assert!(check_temperature(0.0f64).is_ok() && check_temperature(0.8f32).is_ok());
        for bad in [f64::NAN, -0.5, f64::INFINITY] {
            let e = check_temperature(bad).unwrap_err();
            assert!(e.starts_with("temperature must be") && e.ends_with(&bad.to_string()), "{e}");
        }
        assert_eq!(check_top_p(1.01f32).unwrap_err(), "top_p must be in (0, 1] (1 = off), got 1.01");
    }
}
