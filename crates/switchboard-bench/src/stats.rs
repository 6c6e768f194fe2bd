//! Latency samples and their percentiles.

use std::time::Duration;

/// Latencies in microseconds.
#[derive(Default, Clone)]
pub struct Samples(Vec<u32>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p` quantile (0..=1) in milliseconds; 0 when there is no sample.
    pub fn ms(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
        round(self.0[i] as f64 / 1000.0, 3)
    }

    /// p50, p99 and p99.9 as JSON.
    pub fn summary(&mut self) -> serde_json::Value {
        serde_json::json!({"p50_ms": self.ms(0.5), "p99_ms": self.ms(0.99), "p999_ms": self.ms(0.999), "samples": self.len()})
    }
}

/// Whole numbers written as integers (`14045`, not `14045.0`), in the JSON and so in the tables.
pub fn integral(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| n.is_f64() && x.fract() == 0.0 && x.abs() < 9e15) {
                *v = serde_json::Value::from(x as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral),
        _ => {}
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!((s.ms(0.5), s.ms(0.99), s.ms(1.0)), (50.0, 99.0, 100.0));
        assert_eq!(Samples::default().ms(0.5), 0.0);
    }

    #[test]
    fn whole_numbers_become_integers() {
        let mut v = serde_json::json!({"rps": 14045.0, "p50_ms": 0.25, "list": [2.0, 2.5], "n": 3});
        integral(&mut v);
        assert_eq!(v.to_string(), r#"{"list":[2,2.5],"n":3,"p50_ms":0.25,"rps":14045}"#);
    }
}
