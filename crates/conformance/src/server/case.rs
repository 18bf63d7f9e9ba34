//! One case from start to end: each operation sent to the session it picks, by the
//! request that performs it, then every completed attachment fetched back.

use super::exec::Exec;
use super::ops::{Case, Op};
use super::verdict::Violation;
use crate::runner::CaseFailure;

impl Exec<'_> {
    /// Runs the case; on a violation returns it with the script of what happened.
    pub(crate) async fn run(&mut self, case: &Case) -> Result<(), CaseFailure> {
        let outcome = self.run_ops(case).await;
        outcome.map_err(|v| CaseFailure {
            rule: v.rule,
            message: v.message,
            script: self.script(),
        })
    }

    /// Every operation of the case, then the attachment check.
    async fn run_ops(&mut self, case: &Case) -> Result<(), Violation> {
        self.op(&case.first).await?;
        for op in &case.ops {
            self.op(op).await?;
        }
        self.check_attachments().await
    }

    /// One operation; none when the case has no session yet.
    async fn op(&mut self, op: &Op) -> Result<(), Violation> {
        let s = match *op {
            Op::Open { event, extra } => return self.open(event, extra).await,
            Op::PutNext { s, .. }
            | Op::Finish { s }
            | Op::Resend { s, .. }
            | Op::ResendFinal { s }
            | Op::Status { s }
            | Op::Delete { s }
            | Op::SkipAhead { s, .. }
            | Op::Overlap { s, .. }
            | Op::TooLarge { s, .. }
            | Op::OddLength { s, .. }
            | Op::BadRange { s, .. }
            | Op::WrongTotal { s, .. }
            | Op::LengthMismatch { s, .. }
            | Op::CutBody { s, .. }
            | Op::Concurrent { s } => s,
        };
        let Some(i) = self.pick(s) else {
            return Ok(());
        };
        match *op {
            Op::Finish { .. } => self.finish(i).await,
            Op::Status { .. } => self.status(i, None).await,
            Op::Delete { .. } => self.delete(i).await,
            Op::LengthMismatch { delta, .. } => self.length_mismatch(i, delta).await,
            Op::CutBody { keep, .. } => self.cut_body(i, keep).await,
            Op::Concurrent { .. } => self.concurrent(i).await,
            _ => self.plain_put(i, op).await,
        }
    }

    /// The session an operation's `s` picks, if there is any.
    fn pick(&self, s: u8) -> Option<usize> {
        (!self.sessions.is_empty()).then(|| usize::from(s) % self.sessions.len())
    }
}
