//! What the server check finds wrong: a broken rule and why, at a step of a case.

use crate::Rule;

/// A broken rule, at a step.
#[derive(Clone, Debug)]
pub(crate) struct Violation {
    pub(super) rule: Rule,
    pub(super) message: String,
}

/// The violation of `rule`, because of `message`.
pub(super) fn violation(rule: Rule, message: impl Into<String>) -> Violation {
    Violation {
        rule,
        message: message.into(),
    }
}
