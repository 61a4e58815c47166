//! The figures of one run: a table for people, one JSON object for scripts.

use serde_json::{Map, Value};

/// Named figures, in the order they were added.
#[derive(Default)]
pub struct Report {
    fields: Vec<(String, Value)>,
}

impl Report {
    /// A report for `scenario`.
    pub fn new(scenario: &str) -> Self {
        let mut report = Self::default();
        report.set("scenario", scenario);
        report
    }

    /// Sets one figure (None is reported as null).
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(key, _)| key == name) {
            Some((_, old)) => *old = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }

    /// A figure as a number, if it is one.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.fields.iter().find(|(key, _)| key == name).and_then(|(_, value)| value.as_f64())
    }

    /// Prints the summary table to stderr and, with `json`, the JSON object
    /// as the last line of stdout (else the table goes to stdout).
    pub fn print(&self, json: bool) {
        let width = self.fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
        let table: String = self
            .fields
            .iter()
            .map(|(key, value)| {
                let shown = match value {
                    Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{key:<width$}  {shown}\n")
            })
            .collect();
        if json {
            eprint!("{table}");
            let object: Map<String, Value> = self.fields.iter().cloned().collect();
            println!("{}", Value::Object(object));
        } else {
            print!("{table}");
        }
    }
}

/// The value at quantile `q` of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(index.min(sorted.len() - 1)).copied()
}
