//! Source definitions: `models/sources.toml`.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde::Deserialize;

use crate::{Error, Result};

/// How a source arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Comma-separated files with a header row.
    Csv,
    /// Newline-delimited JSON with flat records.
    Ndjson,
    /// Newline-delimited JSON with nested lists and structs.
    Json,
    /// A table in a SQL database.
    Sql,
}

/// Which rows a run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// Every file once, by path and content hash.
    FilesOnce,
    /// The whole table, every run.
    Full,
    /// Rows past the watermark of the previous run.
    Incremental,
}

/// What a column that the source does not declare does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DriftPolicy {
    /// Its values go to `_rescued_data`.
    #[default]
    Rescue,
    /// The bronze table gains a string column.
    AddColumn,
    /// The run stops and commits nothing.
    Fail,
}

/// A declared column type, parsed from its text form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `string`: text.
    String,
    /// `int`: a 64-bit integer.
    Int,
    /// `double`: a 64-bit float.
    Double,
    /// `decimal(p,s)`: precision and scale.
    Decimal(u8, i8),
    /// `boolean`.
    Boolean,
    /// `date`: `YYYY-MM-DD`.
    Date,
    /// `timestamp`: microseconds, UTC.
    Timestamp,
    /// `list<t>`: a list of values of one type (JSON sources).
    List(Box<ColumnType>),
    /// `struct<a:t,…>`: named fields (JSON sources).
    Struct(Vec<(String, ColumnType)>),
}

impl ColumnType {
    /// Parses `string`, `decimal(18,2)`, `list<struct<a:string,b:int>>`, …
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (t, rest) = parse_type(text.trim())?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected {rest:?} after the type"));
        }
        Ok(t)
    }

    /// The Arrow type bronze stores it as (strings are plain `Utf8`).
    pub fn arrow(&self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Int => DataType::Int64,
            Self::Double => DataType::Float64,
            Self::Decimal(p, s) => DataType::Decimal128(*p, *s),
            Self::Boolean => DataType::Boolean,
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::List(inner) => DataType::List(Arc::new(Field::new("element", inner.arrow(), true))),
            Self::Struct(fields) => DataType::Struct(Fields::from(
                fields.iter().map(|(n, t)| Field::new(n, t.arrow(), true)).collect::<Vec<_>>(),
            )),
        }
    }

    /// Whether values can arrive as text (CSV and SQL carry scalars only).
    pub fn is_scalar(&self) -> bool {
        !matches!(self, Self::List(_) | Self::Struct(_))
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String => f.write_str("string"),
            Self::Int => f.write_str("int"),
            Self::Double => f.write_str("double"),
            Self::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            Self::Boolean => f.write_str("boolean"),
            Self::Date => f.write_str("date"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::List(t) => write!(f, "list<{t}>"),
            Self::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{n}:{t}")?;
                }
                f.write_str(">")
            }
        }
    }
}

fn parse_type(s: &str) -> std::result::Result<(ColumnType, &str), String> {
    let word_end = s.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(s.len());
    let (word, rest) = s.split_at(word_end);
    let rest = rest.trim_start();
    match word.to_ascii_lowercase().as_str() {
        "string" | "varchar" | "text" => Ok((ColumnType::String, rest)),
        "int" | "bigint" | "long" | "integer" => Ok((ColumnType::Int, rest)),
        "double" | "float" => Ok((ColumnType::Double, rest)),
        "boolean" | "bool" => Ok((ColumnType::Boolean, rest)),
        "date" => Ok((ColumnType::Date, rest)),
        "timestamp" => Ok((ColumnType::Timestamp, rest)),
        "decimal" => {
            let rest = rest.strip_prefix('(').ok_or("decimal needs (precision,scale)")?;
            let close = rest.find(')').ok_or("decimal( is not closed")?;
            let (p, sc) = rest[..close].split_once(',').ok_or("decimal needs (precision,scale)")?;
            let p: u8 = p.trim().parse().map_err(|_| format!("bad precision {p:?}"))?;
            let sc: i8 = sc.trim().parse().map_err(|_| format!("bad scale {sc:?}"))?;
            if !(1..=38).contains(&p) || sc < 0 || sc as u8 > p {
                return Err(format!("decimal({p},{sc}) is out of range"));
            }
            Ok((ColumnType::Decimal(p, sc), &rest[close + 1..]))
        }
        "list" | "array" => {
            let rest = rest.strip_prefix('<').ok_or("list needs <type>")?;
            let (inner, rest) = parse_type(rest.trim_start())?;
            let rest = rest.trim_start().strip_prefix('>').ok_or("list< is not closed")?;
            Ok((ColumnType::List(Box::new(inner)), rest))
        }
        "struct" => {
            let mut rest = rest.strip_prefix('<').ok_or("struct needs <name:type,...>")?;
            let mut fields = Vec::new();
            loop {
                let (name, after) = rest.split_once(':').ok_or("struct field needs name:type")?;
                let name = name.trim();
                if name.is_empty() {
                    return Err("struct field without a name".into());
                }
                let (t, after) = parse_type(after.trim_start())?;
                fields.push((name.to_string(), t));
                let after = after.trim_start();
                if let Some(next) = after.strip_prefix(',') {
                    rest = next.trim_start();
                } else {
                    rest = after.strip_prefix('>').ok_or("struct< is not closed")?;
                    break;
                }
            }
            Ok((ColumnType::Struct(fields), rest))
        }
        "" => Err(format!("expected a type at {s:?}")),
        other => Err(format!("unknown type {other:?}")),
    }
}

/// One declared column.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    /// The column's name, as in the files (matched ignoring case when no
    /// field has the exact name).
    pub name: String,
    /// The type as written (`type = "decimal(18,2)"`).
    #[serde(rename = "type")]
    pub type_text: String,
    /// Personal data, masked for roles that may not see it.
    #[serde(default)]
    pub pii: bool,
    /// The parsed type, set when the catalog loads; read it with
    /// [`ColumnDef::column_type`].
    #[serde(skip)]
    pub column_type: Option<ColumnType>,
}

impl ColumnDef {
    /// The parsed type (validated when the catalog loads).
    pub fn column_type(&self) -> &ColumnType {
        self.column_type.as_ref().expect("types are parsed when the catalog loads")
    }
}

/// One source: a bronze table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    /// The source's name; its bronze table is `bronze_<name>`.
    pub name: String,
    /// How it arrives.
    pub kind: SourceKind,
    /// File sources: a glob under each day folder.
    pub location: Option<String>,
    /// SQL sources: the environment variable with the database URL.
    pub url_env: Option<String>,
    /// SQL sources: the table to read.
    pub table: Option<String>,
    /// Which rows a run loads.
    pub load: LoadMode,
    /// Incremental SQL sources: the column whose growth marks new rows.
    pub watermark: Option<String>,
    /// Whether runs ingest it (default true).
    #[serde(default = "yes")]
    pub active: bool,
    /// What undeclared columns do (default: rescued).
    #[serde(default)]
    pub drift: DriftPolicy,
    /// The declared columns, in order.
    pub columns: Vec<ColumnDef>,
}

fn yes() -> bool {
    true
}

impl SourceDef {
    /// `bronze_<name>`.
    pub fn bronze_table(&self) -> String {
        format!("bronze_{}", self.name)
    }

    /// The declared column `name`, if any.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile {
    source: Vec<SourceDef>,
}

/// Every source of a project, validated.
#[derive(Clone, Debug)]
pub struct SourceCatalog {
    sources: Vec<SourceDef>,
}

impl SourceCatalog {
    /// Parses and checks a `sources.toml`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |reason: String| Error::Model { origin: origin.to_string(), reason };
        let file: SourcesFile = toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for mut s in file.source {
            let ctx = |reason: String| bad(format!("source {:?}: {reason}", s.name));
            if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(ctx("name must be lower-case letters, digits and '_'".into()));
            }
            if !names.insert(s.name.clone()) {
                return Err(ctx("defined twice".into()));
            }
            if s.columns.is_empty() {
                return Err(ctx("declares no columns".into()));
            }
            let mut cols = HashSet::new();
            for c in &mut s.columns {
                if !cols.insert(c.name.clone()) {
                    return Err(bad(format!("source {:?}: column {:?} declared twice", s.name, c.name)));
                }
                if c.name.starts_with('_') {
                    return Err(bad(format!(
                        "source {:?}: column {:?}: names starting with '_' are reserved for bronze metadata",
                        s.name, c.name
                    )));
                }
                let t = ColumnType::parse(&c.type_text)
                    .map_err(|e| bad(format!("source {:?}: column {:?}: {e}", s.name, c.name)))?;
                c.column_type = Some(t);
            }
            match s.kind {
                SourceKind::Sql => {
                    if s.table.as_deref().unwrap_or("").is_empty() {
                        return Err(ctx("a sql source needs `table`".into()));
                    }
                    if s.load == LoadMode::FilesOnce {
                        return Err(ctx("a sql source loads `full` or `incremental`".into()));
                    }
                    if s.columns.iter().any(|c| !c.column_type().is_scalar()) {
                        return Err(ctx("a sql source declares scalar columns only".into()));
                    }
                }
                SourceKind::Csv | SourceKind::Ndjson | SourceKind::Json => {
                    if s.location.as_deref().unwrap_or("").is_empty() {
                        return Err(ctx("a file source needs `location`".into()));
                    }
                    if s.load != LoadMode::FilesOnce {
                        return Err(ctx("a file source loads `files-once`".into()));
                    }
                    if s.kind == SourceKind::Csv && s.columns.iter().any(|c| !c.column_type().is_scalar()) {
                        return Err(ctx(
                            "a csv source declares scalar columns only; use kind = \"json\" for nested data".into(),
                        ));
                    }
                }
            }
            if s.load == LoadMode::Incremental {
                let wm = s.watermark.clone().ok_or_else(|| ctx("an incremental source needs `watermark`".into()))?;
                if s.column(&wm).is_none() {
                    return Err(ctx(format!("watermark {wm:?} is not a declared column")));
                }
            }
            sources.push(s);
        }
        Ok(Self { sources })
    }

    /// The sources shipped with gold.
    pub fn default_catalog() -> Result<Self> {
        Self::parse(reference::models::SOURCES, "embedded models/sources.toml")
    }

    /// Every source, in file order.
    pub fn sources(&self) -> &[SourceDef] {
        &self.sources
    }

    /// The active sources.
    pub fn active(&self) -> impl Iterator<Item = &SourceDef> {
        self.sources.iter().filter(|s| s.active)
    }

    /// The source called `name`.
    pub fn get(&self, name: &str) -> Option<&SourceDef> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// A copy with `name` switched on or off.
    pub fn with_active(mut self, name: &str, active: bool) -> Result<Self> {
        let s = self
            .sources
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Model { origin: "sources".into(), reason: format!("no source named {name:?}") })?;
        s.active = active;
        Ok(self)
    }
}
