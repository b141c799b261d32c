//! Inputs of `http.request` and `http.wait`.

use indexmap::IndexMap;
use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// An HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET (the default).
    #[default]
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// OPTIONS.
    Options,
}

impl Method {
    /// The method for reqwest.
    pub fn http(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Options => reqwest::Method::OPTIONS,
        }
    }

    /// Whether sending it twice does no more than sending it once.
    pub fn idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }

    /// Whether it only reads (it may run under `--dry-run`).
    pub fn reads(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

/// Credentials.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        #[serde(default)]
        password: String,
    },
    /// A key in a header (`header: X-API-Key`) or a query parameter (`query: api_key`).
    ApiKey {
        /// The key.
        value: String,
        /// The header that carries it.
        #[serde(default)]
        header: Option<String>,
        /// The query parameter that carries it.
        #[serde(default)]
        query: Option<String>,
    },
}

/// Accepted status codes: a code (`200`), a class (`"2xx"`) or a range (`"200-299"`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusSpec {
    /// One code.
    Code(#[schemars(range(min = 100, max = 599))] u16),
    /// `"2xx"` or `"200-299"`.
    Pattern(#[schemars(pattern(r"^([1-5]xx|[1-5][0-9][0-9]-[1-5][0-9][0-9])$"))] String),
}

impl StatusSpec {
    /// Whether `status` matches.
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusSpec::Code(c) => *c == status,
            StatusSpec::Pattern(p) => {
                if let Some(class) = p.strip_suffix("xx") {
                    return class.parse::<u16>().is_ok_and(|c| status / 100 == c);
                }
                match p.split_once('-') {
                    Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
                        (Ok(a), Ok(b)) => (a..=b).contains(&status),
                        _ => false,
                    },
                    None => false,
                }
            }
        }
    }
}

/// What a response must be.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Accepted status codes (default: any 2xx).
    #[serde(default)]
    pub status: Vec<StatusSpec>,
    /// Bare expressions over `result` (`status`, `headers`, `json`, `body`) that must be true:
    /// `"result.json.state == 'ok'"`. Written without `{{ }}`.
    #[serde(default)]
    pub that: Vec<String>,
}

/// How to follow pages.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// `link` (the `Link: <…>; rel="next"` header, as GitHub and GitLab send it), or a bare
    /// expression over `result` giving the next page: a URL, a mapping of query parameters
    /// for the same URL (`{'cursor': result.json.next}`), or none/false/empty when done.
    #[serde(default = "link")]
    pub next: String,
    /// A bare expression over `result` giving a page's items (default: the JSON body when it
    /// is a list, else `result.json.items`).
    #[serde(default)]
    pub items: Option<String>,
    /// Pages at most (default 10); hitting it is not an error, `result.truncated` says so.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_pages: Option<u32>,
}

fn link() -> String {
    "link".into()
}

/// TLS settings shared by the HTTP actions.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// A CA certificate (PEM) to trust on top of the system's.
    pub ca_cert: Option<String>,
    /// A client certificate (PEM).
    pub client_cert: Option<String>,
    /// Its private key (PEM).
    pub client_key: Option<String>,
    /// Accept any server certificate.
    pub insecure: bool,
}

macro_rules! tls_of {
    ($t:ty) => {
        impl $t {
            /// The TLS settings.
            pub fn tls(&self) -> Tls {
                Tls {
                    ca_cert: self.ca_cert.clone(),
                    client_cert: self.client_cert.clone(),
                    client_key: self.client_key.clone(),
                    insecure: self.insecure,
                }
            }
        }
    };
}
tls_of!(RequestInput);
tls_of!(WaitInput);

/// `http.request` inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = {"anyOf": [
    {"required": ["json", "form"]}, {"required": ["json", "body"]}, {"required": ["form", "body"]}
]}))]
pub struct RequestInput {
    /// The URL (`https://api.example.com/v1/items`).
    pub url: String,
    /// The method (default GET).
    #[serde(default)]
    pub method: Method,
    /// Query parameters, added to the URL's own (a list gives the parameter several times).
    #[serde(default)]
    pub query: IndexMap<String, Value>,
    /// Request headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Credentials: `{bearer: TOKEN}`, `{basic: {username, password}}`, or `{api_key: {value,
    /// header | query}}`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// A JSON body (sent with `Content-Type: application/json`).
    #[serde(default)]
    pub json: Option<Value>,
    /// A form body (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub form: Option<IndexMap<String, Value>>,
    /// A raw body.
    #[serde(default)]
    pub body: Option<String>,
    /// Time limit per attempt (default 30s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Follow redirects, at most 10 (default true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// A CA certificate (PEM) to trust on top of the system's, relative to the runbook.
    #[serde(default)]
    pub ca_cert: Option<String>,
    /// A client certificate (PEM) for mutual TLS, relative to the runbook.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// The client certificate's private key (PEM), when not in `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// Accept any server certificate. Only as an explicit opt-in; it prints a warning.
    #[serde(default)]
    pub insecure: bool,
    /// Stream the response body into this file (relative to the runbook) instead of the
    /// result; memory stays bounded whatever the size.
    #[serde(default)]
    pub save_to: Option<String>,
    /// What the response must be; a response that misses it fails the step with its status and
    /// the start of its body.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Follow pages and gather their items into `result.items`.
    #[serde(default)]
    pub paginate: Option<Paginate>,
    /// Tries after the first on connection errors, 429 and 5xx (default 2; 0 to never retry).
    /// `Retry-After` is honoured (up to `max_retry_after`). POST and PATCH are retried only on
    /// 429 and 503, when the server said it did not process them.
    #[serde(default)]
    #[schemars(range(max = 20))]
    pub retries: Option<u32>,
    /// The longest `Retry-After` wait honoured (default 60s); a longer one fails the step.
    #[serde(default)]
    pub max_retry_after: Option<DurationSpec>,
    /// Bytes of response read into the result (default 16 MiB); a bigger response fails the
    /// step (use `save_to`).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_response: Option<u64>,
    /// Under `--dry-run`, GET, HEAD and OPTIONS requests run (they change nothing); set false to
    /// only describe them too. Other methods are always only described.
    #[serde(default = "yes")]
    pub dry_run_reads: bool,
}

fn yes() -> bool {
    true
}

/// `http.wait` inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    /// The URL to poll.
    pub url: String,
    /// The method (default GET).
    #[serde(default)]
    pub method: Method,
    /// Request headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Credentials, as for `http.request`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// What counts as ready (default: any 2xx).
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Time between attempts (default 2s).
    #[serde(default)]
    pub interval: Option<DurationSpec>,
    /// Give up after this long (default 5m).
    #[serde(default)]
    pub deadline: Option<DurationSpec>,
    /// Time limit per attempt (default 10s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Follow redirects (default true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// A CA certificate (PEM) to trust on top of the system's, relative to the runbook.
    #[serde(default)]
    pub ca_cert: Option<String>,
    /// A client certificate (PEM) for mutual TLS, relative to the runbook.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// The client certificate's private key (PEM), when not in `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// Accept any server certificate. Only as an explicit opt-in; it prints a warning.
    #[serde(default)]
    pub insecure: bool,
}
