//! How the fake writes its answers: a dialect and the quirks beyond it.

use upsession_core::Dialect;

/// How the fake writes its answers, beyond our server's tidy form.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quirks {
    /// The core's dialect: statuses, `ExpirationDateTime` casing, range forms,
    /// `@odata.context`, `Location` style, and (OneDrive) its fragment rules.
    pub dialect: Dialect,
    /// Every property of every JSON answer to an upload-session request in
    /// PascalCase: `UploadUrl`, `NextExpectedRanges`, and the attachment's `Id`,
    /// `Name`, … of a completion body (Outlook REST's heritage; the dialect covers the
    /// progress answers' `ExpirationDateTime` and `NextExpectedRanges` only).
    pub pascal_case: bool,
    /// The completing fragment is answered 200 with the attachment's JSON (an `id`)
    /// instead of 201 with a `Location`.
    pub completion_with_id: bool,
    /// The completing 201 carries the attachment's JSON beside its `Location`
    /// (instead of an empty body). [`Quirks::completion_with_id`] wins over it.
    pub completion_body: bool,
}

impl Quirks {
    /// Our server's answers.
    pub fn none() -> Self {
        Self {
            dialect: Dialect::UPSESSION,
            pascal_case: false,
            completion_with_id: false,
            completion_body: false,
        }
    }

    /// Answers in `dialect`.
    pub fn dialect(dialect: Dialect) -> Self {
        Self {
            dialect,
            ..Self::none()
        }
    }

    /// Sets PascalCase property names.
    #[must_use]
    pub fn with_pascal_case(mut self, on: bool) -> Self {
        self.pascal_case = on;
        if on {
            self.dialect = self
                .dialect
                .with_casing(upsession_core::dialect::Casing::Pascal);
        }
        self
    }

    upsession_core::setters! {
        /// Sets completion as 200 with an `id`.
        with_completion_with_id(completion_with_id: bool);
        /// Sets a JSON body (the attachment) on the completing 201.
        with_completion_body(completion_body: bool);
    }
}

impl Default for Quirks {
    fn default() -> Self {
        Self::none()
    }
}
