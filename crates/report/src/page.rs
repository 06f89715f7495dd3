//! The HTML page: each section's heading, note, chart (or why there is
//! none) and table, between the page's head and its closing list of the
//! tables and versions shown. Every text is escaped; the page has no
//! script and no address.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::chart;
use crate::sections::{Row, Section};
use crate::{Error, Report, Result, Source};

/// The rows of a query, or why there are none (a table it reads is not in
/// the run's state).
type Read = std::result::Result<Vec<Row>, String>;

/// A page being written, section by section.
pub(crate) struct Page<'a> {
    source: &'a Source<'a>,
    body: String,
    charts: Vec<&'static str>,
    versions: BTreeMap<String, i64>,
    without_data: Vec<(&'static str, String)>,
}

impl<'a> Page<'a> {
    /// An empty page of `source`.
    pub(crate) fn new(source: &'a Source<'a>) -> Self {
        Page { source, body: String::new(), charts: Vec::new(), versions: BTreeMap::new(), without_data: Vec::new() }
    }

    /// The rows of `sql`, or why there are none (a table it reads does not
    /// exist in the state).
    async fn rows(&mut self, section: &'static str, sql: &str) -> Result<Read> {
        let versions = query::Versions::State { state: self.source.state.clone(), origin: self.source.origin.clone() };
        match query::run(self.source.warehouse, sql, &versions, self.source.masking).await {
            Ok(result) => {
                self.versions.extend(result.versions);
                let json =
                    query::to_json(&result.batches).map_err(|e| Error::Query { section, source: Box::new(e) })?;
                Ok(Ok(match json {
                    Value::Array(rows) => rows
                        .into_iter()
                        .filter_map(|r| match r {
                            Value::Object(m) => Some(m),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                }))
            }
            Err(query::Error::NoTable { table, reason }) => Ok(Err(format!("table {table} {reason}"))),
            Err(e) => Err(Error::Query { section, source: Box::new(e) }),
        }
    }

    /// Adds `section`: its queries are run (the chart's, then the table's
    /// own when it has one), then its chart is drawn and its table
    /// written.
    pub(crate) async fn add(&mut self, section: &Section) -> Result<()> {
        let rows = self.rows(section.id, section.sql).await?;
        let own = match section.table.sql {
            Some(sql) => Some(self.rows(section.id, sql).await?),
            None => None,
        };
        let svg = match &rows {
            Ok(rows) if !rows.is_empty() => Ok((section.draw)(rows, self.source)
                .map_err(|e| Error::Chart { chart: section.id, source: Box::new(e) })?),
            Ok(_) => Err(section.empty.to_string()),
            Err(why) => Err(why.clone()),
        };
        let cells: Vec<Vec<String>> = match own.as_ref().unwrap_or(&rows) {
            Ok(rows) => rows.iter().enumerate().map(|(i, r)| (section.table.row)(i, r)).collect(),
            Err(_) => Vec::new(),
        };
        let note = section.note.replace("{threshold}", &self.source.referral_threshold.to_string());
        self.section(section.id, section.title, &note, svg, &table(section.table.head, &cells));
        Ok(())
    }

    /// One section: a heading, a note, the chart (or a note that there is
    /// no data) and an optional table.
    fn section(
        &mut self,
        id: &'static str,
        title: &str,
        note: &str,
        svg: std::result::Result<String, String>,
        table: &str,
    ) {
        self.charts.push(id);
        let _ = write!(self.body, "<section><h2>{}</h2><p class=\"note\">{}</p>", esc(title), esc(note));
        let _ = write!(self.body, "<figure class=\"chart\" id=\"{id}\">");
        match svg {
            Ok(svg) => self.body.push_str(&svg),
            Err(reason) => {
                let _ = write!(self.body, "{}", chart::no_data(&reason));
                self.without_data.push((id, reason));
            }
        }
        let _ = write!(self.body, "<figcaption>{}</figcaption></figure>{table}</section>", esc(title));
    }

    /// The whole page: its head, the sections, and the tables and versions
    /// they showed.
    pub(crate) fn finish(self) -> Report {
        let mut html = String::new();
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gold report: {origin}</title><style>{CSS}</style></head><body>\
             <h1>gold report</h1><p class=\"origin\">The warehouse as {origin} left it.</p>",
            origin = esc(&self.source.origin)
        );
        html.push_str(&self.body);
        let versions: Vec<Vec<String>> = self.versions.iter().map(|(t, v)| vec![t.clone(), v.to_string()]).collect();
        let _ = writeln!(
            html,
            "<section><h2>Tables and versions shown</h2>{}</section></body></html>",
            table(&["table", "Delta version"], &versions)
        );
        Report { html, charts: self.charts, versions: self.versions, without_data: self.without_data }
    }
}

/// `text` escaped for HTML.
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An HTML table of `rows` (already formatted cells); nothing when there
/// are no rows.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut t = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            let _ = write!(t, "<td>{}</td>", esc(c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

const CSS: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}\
h1{margin-bottom:0}.origin{color:#555}section{margin:2em 0}.note{color:#555;font-size:0.9em}\
figure{margin:0}figcaption{display:none}svg{max-width:100%;height:auto}\
table{border-collapse:collapse;font-size:0.85em;margin-top:0.8em}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}";
