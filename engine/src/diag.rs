//! Diagnostics: every problem found in a runbook, with its file:line:column, and three ways to
//! print them (a snippet for people, one line each for editors, JSON for tools).

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::source::{Source, Span};

/// What kind of problem a diagnostic is; stable, for tools and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file could not be read.
    Io,
    /// The YAML is malformed or exceeds a budget (depth, size, alias expansion).
    Yaml,
    /// A value has the wrong type or shape.
    Schema,
    /// A key that the format does not have.
    UnknownKey,
    /// Two steps with one id.
    DuplicateId,
    /// `needs` names a step that does not exist (or is in another phase).
    MissingNeed,
    /// The steps' `needs` form a cycle.
    Cycle,
    /// `uses` names an action that is not registered.
    UnknownAction,
    /// `with:` does not match the action's input schema.
    ActionInput,
    /// A template or expression does not compile.
    TemplateSyntax,
    /// A template reads a name that is not in scope.
    UnknownName,
    /// A template reads `steps.X` where X does not run before the step.
    StepReference,
    /// A template failed while rendering (at run time): an undefined value, a filter error.
    TemplateRender,
    /// A param value does not match its declaration, or a required param is missing.
    Param,
}

impl Code {
    /// The code as printed: `unknown-key`, `cycle` …
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::Yaml => "yaml",
            Code::Schema => "schema",
            Code::UnknownKey => "unknown-key",
            Code::DuplicateId => "duplicate-id",
            Code::MissingNeed => "missing-need",
            Code::Cycle => "cycle",
            Code::UnknownAction => "unknown-action",
            Code::ActionInput => "action-input",
            Code::TemplateSyntax => "template-syntax",
            Code::UnknownName => "unknown-name",
            Code::StepReference => "step-reference",
            Code::TemplateRender => "template-render",
            Code::Param => "param",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in one file.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// What kind of problem.
    pub code: Code,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when there is something to say ("did you mean `needs`?").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The file, as the user named it.
    pub file: String,
    /// Where; `None` when the problem is the file as a whole.
    #[serde(flatten, serialize_with = "serialize_span")]
    pub span: Option<Span>,
    /// A short note drawn under the snippet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn serialize_span<S: serde::Serializer>(span: &Option<Span>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    if let Some(sp) = span {
        m.serialize_entry("line", &sp.line)?;
        m.serialize_entry("column", &sp.column)?;
        m.serialize_entry("offset", &sp.offset)?;
        m.serialize_entry("length", &sp.len)?;
    }
    m.end()
}

impl Diagnostic {
    /// A diagnostic at a span of a source.
    pub fn new(
        code: Code,
        source: &Source,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            help: None,
            file: source.name(),
            span,
            label: None,
        }
    }

    /// Adds a hint on how to fix it.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds an optional hint.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Adds the note drawn under the snippet.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// `file:line:column: error[code]: message` (and `help: …` on the next line).
    pub fn short(&self) -> String {
        let mut out = match self.span {
            Some(s) => format!(
                "{}:{}:{}: error[{}]: {}",
                self.file, s.line, s.column, self.code, self.message
            ),
            None => format!("{}: error[{}]: {}", self.file, self.code, self.message),
        };
        if let Some(h) = &self.help {
            out.push_str("\n  help: ");
            out.push_str(h);
        }
        out
    }

    /// The diagnostic with a snippet of the source, for a terminal.
    pub fn pretty(&self, source: &Source, color: bool) -> String {
        if self.span.is_none() {
            // No place to show: name the file in the message itself.
            let mut d = self.clone();
            d.message = format!("{}: {}", self.file, self.message);
            d.span = Some(Span::default());
            return d.pretty_inner(source, color, false);
        }
        self.pretty_inner(source, color, true)
    }

    fn pretty_inner(&self, source: &Source, color: bool, snippet: bool) -> String {
        let report = Snippet {
            diag: self,
            src: miette::NamedSource::new(self.where_(), source.text.clone()),
            snippet,
        };
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_context_lines(1);
        let mut out = String::new();
        if handler.render_report(&mut out, &report).is_err() {
            return self.short();
        }
        out
    }

    fn where_(&self) -> String {
        self.file.clone()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

struct Snippet<'a> {
    diag: &'a Diagnostic,
    src: miette::NamedSource<Arc<str>>,
    snippet: bool,
}

impl fmt::Debug for Snippet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Snippet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Snippet<'_> {}

impl miette::Diagnostic for Snippet<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.snippet.then_some(&self.src as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = self.diag.span.filter(|_| self.snippet)?;
        let label = miette::LabeledSpan::new(
            Some(
                self.diag
                    .label
                    .clone()
                    .unwrap_or_else(|| "here".to_string()),
            ),
            span.offset,
            span.len.max(1),
        );
        Some(Box::new(std::iter::once(label)))
    }
}
