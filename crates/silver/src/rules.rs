//! The rules a table checks: three built in (`parsed`, `key_present`,
//! `conflicting_duplicate`), then the model's expectations, then one per
//! parent. A row's failed rules are held as indices into this list, in
//! this order, which is also the order of `_failed_rules`.

use crate::model::{Action, OnMissing, TableModel};

/// The index of the built-in `conflicting_duplicate` rule.
pub(crate) const CONFLICT: u16 = 2;

/// The rule kinds a table checks, in `_failed_rules` order.
#[derive(Clone, Debug)]
pub(crate) enum RuleKind {
    /// The bronze row parsed (`_error IS NULL`).
    Parsed,
    /// Every key column is set.
    KeyPresent,
    /// Found by de-duplication.
    Conflict,
    /// A declared expectation's SQL.
    Sql(String),
    /// A parent's key must exist.
    Parent { column: String, udf: String },
}

/// One rule of a table: what it checks and what a failure does.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) fail_above: Option<f64>,
    /// The bronze tables it applies to; `None` for all.
    pub(crate) sources: Option<Vec<String>>,
    pub(crate) kind: RuleKind,
}

impl Rule {
    /// A rule that aborts the run when it fails (`fail`) or fails too often.
    pub(crate) fn can_abort(&self) -> bool {
        matches!(self.kind, RuleKind::Sql(_)) && (self.action == Action::Fail || self.fail_above.is_some())
    }

    /// Whether the rule checks rows of `bronze`.
    pub(crate) fn applies_to(&self, bronze: &str) -> bool {
        self.sources.as_ref().is_none_or(|s| s.iter().any(|b| b == bronze))
    }
}

/// The rules of `model`, in `_failed_rules` order.
pub(crate) fn rules_of(model: &TableModel) -> Vec<Rule> {
    let builtin = |name: &str, kind| Rule {
        name: name.to_string(),
        action: Action::Quarantine,
        fail_above: None,
        sources: None,
        kind,
    };
    let mut rules = vec![
        builtin("parsed", RuleKind::Parsed),
        builtin("key_present", RuleKind::KeyPresent),
        builtin("conflicting_duplicate", RuleKind::Conflict),
    ];
    for e in &model.expectations {
        rules.push(Rule {
            name: e.name.clone(),
            action: e.action,
            fail_above: e.fail_above,
            sources: e.sources.clone(),
            kind: RuleKind::Sql(e.rule.clone()),
        });
    }
    for (i, p) in model.parents.iter().enumerate() {
        rules.push(Rule {
            name: p.name.clone(),
            action: match p.on_missing {
                OnMissing::Quarantine => Action::Quarantine,
                OnMissing::Flag => Action::Warn,
            },
            fail_above: None,
            sources: p.sources.clone(),
            kind: RuleKind::Parent { column: p.column.clone(), udf: format!("__parent_{i}") },
        });
    }
    rules
}

/// The action of the rule named `name`, if `rules` has it.
pub(crate) fn rule_action(rules: &[Rule], name: &str) -> Option<Action> {
    rules.iter().find(|r| r.name == name).map(|r| r.action)
}
