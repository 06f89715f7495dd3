//! Results on stdout: text for people, or exactly one JSON document.

use std::io::Write;

use crate::cli::OutputFormat;

/// Collects a command's result and prints it once, at the end, so that a
/// JSON run prints one document whatever the command does on the way.
pub(crate) struct Printer {
    format: OutputFormat,
    text: String,
    json: Option<serde_json::Value>,
}

impl Printer {
    pub(crate) fn new(format: OutputFormat) -> Self {
        Self { format, text: String::new(), json: None }
    }

    /// Sets the result: `json` for `--output-format json`, `text` otherwise.
    pub(crate) fn result(&mut self, json: serde_json::Value, text: String) {
        self.json = Some(json);
        self.text = text;
    }

    /// On failure: the result set before the error, if any (a rebuild
    /// that found differences still shows its table), then the error; in
    /// JSON, one document with both.
    pub(crate) fn flush_error(self, code: u8, error: &str) {
        let mut out = std::io::stdout().lock();
        match self.format {
            OutputFormat::Json => {
                let mut doc = self.json.unwrap_or_else(|| serde_json::json!({}));
                if !doc.is_object() {
                    doc = serde_json::json!({"result": doc});
                }
                doc["status"] = "error".into();
                doc["exit_code"] = code.into();
                doc["error"] = error.into();
                let _ = writeln!(out, "{doc}");
            }
            OutputFormat::Text => {
                let _ = out.write_all(self.text.as_bytes());
            }
        }
        let _ = out.flush();
    }

    pub(crate) fn flush(self) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.format {
            OutputFormat::Json => {
                let doc = self.json.unwrap_or_else(|| serde_json::json!({"status": "ok"}));
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            }
            OutputFormat::Text => out.write_all(self.text.as_bytes())?,
        }
        out.flush()?;
        Ok(())
    }
}
