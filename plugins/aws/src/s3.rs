//! S3: `aws.s3.upload`, `aws.s3.download`, `aws.s3.list`, `aws.s3.delete`, `aws.s3.presign`.
//!
//! Files are streamed from and to disk: uploads read each request's bytes from the file (whole
//! files with PutObject, parts of large ones with a multipart upload that is aborted on any
//! failure or cancellation), downloads write the body to a temporary file next to the
//! destination and rename it once complete. Addressing is path-style (`endpoint/bucket/key`)
//! when an endpoint URL is configured (`AWS_ENDPOINT_URL`, a profile's `endpoint_url`: moto,
//! MinIO, LocalStack), virtual-hosted otherwise; `path_style` overrides it per step.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
    StorageClass,
};
use aws_smithy_types::byte_stream::Length;
use indexmap::IndexMap;
use opsbook_engine::action::{
    Action, ActionError, ActionSpec, ErrorKind, LogStream, Registry, StepContext,
};
use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::common::{aws_input, date, parse, text};
use crate::config::sdk_config;
use crate::error::from_sdk;

pub(crate) fn register(r: &mut Registry) {
    r.register(Upload);
    r.register(Download);
    r.register(List);
    r.register(DeleteObjects);
    r.register(Presign);
}

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 * MIB;
/// S3's largest part.
const MAX_PART: u64 = 5 * 1024 * MIB;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
const DEFAULT_THRESHOLD: u64 = 16 * MIB;
const DEFAULT_PART: u64 = 8 * MIB;
const DEFAULT_CONCURRENCY: usize = 4;
/// Most keys of one DeleteObjects call.
const DELETE_BATCH: usize = 1000;
/// The longest a SigV4 presigned URL may live.
const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long aborting a multipart upload may take after a failure or a cancellation.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

const S3_DOC: &str = "Credentials and region come from the standard chain (environment, \
profiles, SSO, instance metadata, web identity; `AWS_ENDPOINT_URL` is honoured), with `region`, \
`profile` and `assume_role` (`role_arn`, `session_name`, `external_id`) per step. Addressing is \
path-style (`https://endpoint/bucket/key`) when an endpoint URL is configured (moto, MinIO, \
LocalStack) and virtual-hosted otherwise; `path_style: true|false` overrides it. Errors carry \
S3's code and message (`NoSuchBucket: …`, `NoSuchKey: …`, `AccessDenied: …`) and say when a retry \
may help.";

/// An S3 client on `config`: path-style addressing when asked, or by default when an endpoint
/// URL is configured (emulators and S3-compatible stores rarely serve bucket subdomains).
fn client(config: &SdkConfig, path_style: Option<bool>) -> aws_sdk_s3::Client {
    let path_style = path_style.unwrap_or_else(|| config.endpoint_url().is_some());
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Checks that the bucket exists and can be reached (HeadBucket), with S3's words for the
/// usual answers (HeadBucket's errors have no body, so no code of their own).
async fn head_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), ActionError> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let (code, message) = match status {
                Some(404) => ("NoSuchBucket", "The specified bucket does not exist"),
                Some(403) => ("AccessDenied", "Access to the bucket is denied"),
                Some(301) => (
                    "PermanentRedirect",
                    "The bucket is in another region: set `region`",
                ),
                _ => return Err(from_sdk("HeadBucket", e)),
            };
            Err(
                ActionError::permanent(format!("HeadBucket: {code}: {message} ({bucket})"))
                    .with_details(json!({"code": code, "message": message, "retryable": false})),
            )
        }
    }
}

/// An S3 ETag without its quotes.
fn etag(e: Option<&str>) -> Option<String> {
    e.map(|t| t.trim_matches('"').to_string())
}

/// `prefix` as a folder: `logs` → `logs/`, `` stays empty.
fn folder_prefix(prefix: Option<&str>) -> String {
    match prefix {
        Some(p) if !p.is_empty() && !p.ends_with('/') => format!("{p}/"),
        Some(p) => p.to_string(),
        None => String::new(),
    }
}

/// The Content-Type for a file name, from its extension (`application/octet-stream` when
/// unknown).
pub fn guess_content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "text" => "text/plain",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "zip" => "application/zip",
        "csv" => "text/csv",
        "yaml" | "yml" => "application/yaml",
        "md" => "text/markdown",
        "xml" => "application/xml",
        "css" => "text/css",
        "js" => "text/javascript",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Whether `path` matches a glob: `*` (anything but `/`), `?` (one character but `/`), `**`
/// (anything, `/` included; `**/` also matches no folder at all).
fn glob(pattern: &[char], path: &[char]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some('*') if pattern.get(1) == Some(&'*') => {
            let rest = &pattern[2..];
            if rest.first() == Some(&'/') && glob(&rest[1..], path) {
                return true;
            }
            (0..=path.len()).any(|i| glob(rest, &path[i..]))
        }
        Some('*') => {
            let stop = path.iter().position(|&c| c == '/').unwrap_or(path.len());
            (0..=stop).any(|i| glob(&pattern[1..], &path[i..]))
        }
        Some('?') => path.first().is_some_and(|&c| c != '/') && glob(&pattern[1..], &path[1..]),
        Some(c) => path.first() == Some(c) && glob(&pattern[1..], &path[1..]),
    }
}

/// Whether the relative path `rel` (with `/`) matches `pattern`: a pattern without `/` is
/// matched against the file name at any depth (`*.log`), one with `/` against the whole path
/// (`app/**/*.log`).
fn matches(pattern: &str, rel: &str) -> bool {
    let target = if pattern.contains('/') {
        rel
    } else {
        rel.rsplit('/').next().unwrap_or(rel)
    };
    let p: Vec<char> = pattern.trim_start_matches("./").chars().collect();
    let t: Vec<char> = target.chars().collect();
    glob(&p, &t)
}

/// A local file: its path, its path relative to the walked folder (with `/`) and its size.
#[derive(Debug, Clone)]
struct LocalFile {
    path: PathBuf,
    rel: String,
    size: u64,
}

/// Every regular file under `root` (symbolic links to files followed, to folders not), sorted
/// by relative path.
fn walk(root: &Path) -> Result<Vec<LocalFile>, String> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| format!("{}: the name is not UTF-8", path.display()))?;
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if kind.is_dir() {
                stack.push((path, child));
            } else if kind.is_file() || kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => out.push(LocalFile {
                        path,
                        rel: child,
                        size: m.len(),
                    }),
                    // A link to a folder, a socket, a dangling link: not uploaded.
                    _ => {}
                }
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Runs blocking file system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ActionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ActionError::permanent(format!("file system task failed: {e}")))?
        .map_err(ActionError::permanent)
}

/// What a folder-wide job shares: the client, the bucket, the step's context (its cancel token
/// a child of the step's, cancelled on the first failure) and the request permits.
#[derive(Clone)]
struct Job {
    client: aws_sdk_s3::Client,
    bucket: String,
    cx: StepContext,
    permits: Arc<Semaphore>,
}

impl Job {
    fn new(client: aws_sdk_s3::Client, bucket: &str, cx: &StepContext, concurrency: usize) -> Job {
        let mut cx = cx.clone();
        cx.cancel = cx.cancel.child_token();
        Job {
            client,
            bucket: bucket.to_string(),
            cx,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Waits for a request slot, or fails when the job is cancelled.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ActionError> {
        tokio::select! {
            p = self.permits.clone().acquire_owned() => {
                p.map_err(|_| ActionError::cancelled())
            }
            _ = self.cx.cancel.cancelled() => Err(ActionError::cancelled()),
        }
    }
}

/// Runs `work` on every item, at most `concurrency` at a time; the first failure cancels the
/// others (through the job's token, so that each can clean up) and is returned, with the
/// results that were complete. Results come back in the items' order.
async fn for_all<I, T, F, Fut>(
    job: &Job,
    items: Vec<I>,
    concurrency: usize,
    work: F,
) -> (Vec<T>, Option<ActionError>)
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(Job, I) -> Fut,
    Fut: std::future::Future<Output = Result<T, ActionError>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut done: Vec<(usize, T)> = Vec::new();
    let mut first: Option<ActionError> = None;
    let mut items = items.into_iter().enumerate();
    loop {
        while first.is_none() && set.len() < concurrency.max(1) && !job.cx.cancel.is_cancelled() {
            match items.next() {
                Some((i, item)) => {
                    let fut = work(job.clone(), item);
                    set.spawn(async move { (i, fut.await) });
                }
                None => break,
            }
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        match joined {
            Ok((i, Ok(t))) => done.push((i, t)),
            Ok((_, Err(e))) => {
                // Cancellations that follow the first failure say nothing new.
                let replace = match &first {
                    None => true,
                    Some(f) => f.kind == ErrorKind::Cancelled && e.kind != ErrorKind::Cancelled,
                };
                if replace {
                    first = Some(e);
                }
                job.cx.cancel.cancel();
            }
            Err(e) => {
                if first.is_none() {
                    first = Some(ActionError::permanent(format!(
                        "a transfer task failed: {e}"
                    )));
                }
                job.cx.cancel.cancel();
            }
        }
    }
    if first.is_none() && job.cx.cancel.is_cancelled() {
        first = Some(ActionError::cancelled());
    }
    done.sort_by_key(|(i, _)| *i);
    (done.into_iter().map(|(_, t)| t).collect(), first)
}

/// A failure of a folder-wide job, with what was done before it in its details.
fn with_done(mut e: ActionError, field: &str, done: &[Value]) -> ActionError {
    if e.details.is_null() {
        e.details = json!({});
    }
    if let Some(d) = e.details.as_object_mut() {
        d.insert(field.into(), json!(done));
    }
    if !done.is_empty() {
        e.message = format!("{} ({} {field} before it)", e.message, done.len());
    }
    e
}

// ---------------------------------------------------------------------------------------------
// aws.s3.upload

aws_input! {
    /// Inputs of `aws.s3.upload`.
    pub struct UploadInput {
        /// The bucket.
        pub bucket: String,
        /// A file or a folder, relative to the runbook's folder.
        pub src: String,
        /// The key of a single file (default: `prefix` + the file's name).
        #[serde(default)]
        pub key: Option<String>,
        /// Where a folder goes: keys are `prefix/` + each file's path under `src` (a `/` is
        /// added when missing). For a single file without `key`: `prefix/` + its name.
        #[serde(default)]
        pub prefix: Option<String>,
        /// The Content-Type of every file (default: guessed from each file's extension).
        #[serde(default)]
        pub content_type: Option<String>,
        /// The storage class (`STANDARD_IA`, `GLACIER_IR`, `INTELLIGENT_TIERING` …).
        #[serde(default)]
        pub storage_class: Option<String>,
        /// User metadata (`x-amz-meta-*`) for every object.
        #[serde(default)]
        pub metadata: IndexMap<String, Value>,
        /// Files of this many bytes or more go up in parts (default 16 MiB).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub multipart_threshold: Option<u64>,
        /// The size of a part in bytes (default 8 MiB, at least 5 MiB); raised when a file
        /// would need more than 10,000 parts.
        #[serde(default)]
        #[schemars(range(min = 5242880, max = 5368709120u64))]
        pub part_size: Option<u64>,
        /// Requests in flight at once: files of a folder and parts of a file (default 4).
        #[serde(default)]
        #[schemars(range(min = 1, max = 64))]
        pub concurrency: Option<usize>,
        /// Globs of the files of a folder to upload (default: all). A pattern without `/`
        /// matches file names at any depth (`*.log`), one with `/` the path under `src`
        /// (`app/**/*.log`); `*` and `?` stop at `/`, `**` does not.
        #[serde(default)]
        pub include: Vec<String>,
        /// Globs of the files of a folder to leave out (as `include`), applied after it.
        #[serde(default)]
        pub exclude: Vec<String>,
        /// Path-style addressing (default: when an endpoint URL is configured).
        #[serde(default)]
        pub path_style: Option<bool>,
    }
}

/// A file to upload and where.
#[derive(Debug, Clone)]
struct Planned {
    path: PathBuf,
    key: String,
    size: u64,
    content_type: String,
}

/// The upload settings every file shares.
#[derive(Debug, Clone)]
struct UploadOptions {
    storage_class: Option<StorageClass>,
    metadata: Option<std::collections::HashMap<String, String>>,
    threshold: u64,
    part_size: u64,
    concurrency: usize,
}

/// The part size for a file of `size` bytes: `part_size`, raised so that at most 10,000
/// parts are needed.
fn part_size_for(size: u64, part_size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    part_size.max(needed).clamp(MIN_PART, MAX_PART)
}

/// The files `input` names, where they go.
async fn plan_upload(input: &UploadInput, cx: &StepContext) -> Result<Vec<Planned>, ActionError> {
    let src = cx.cwd.join(&input.src);
    let meta = std::fs::metadata(&src)
        .map_err(|e| ActionError::permanent(format!("src {}: {e}", src.display())))?;
    let files: Vec<(LocalFile, String)> = if meta.is_dir() {
        if input.key.is_some() {
            return Err(ActionError::permanent(
                "`key` names one object: for a folder, give `prefix`",
            ));
        }
        let prefix = folder_prefix(input.prefix.as_deref());
        let root = src.clone();
        let all = blocking(move || walk(&root)).await?;
        all.into_iter()
            .filter(|f| {
                input.include.is_empty() || input.include.iter().any(|p| matches(p, &f.rel))
            })
            .filter(|f| !input.exclude.iter().any(|p| matches(p, &f.rel)))
            .map(|f| {
                let key = format!("{prefix}{}", f.rel);
                (f, key)
            })
            .collect()
    } else {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                ActionError::permanent(format!("src {}: not a file name in UTF-8", src.display()))
            })?
            .to_string();
        let key = match (&input.key, &input.prefix) {
            (Some(k), _) => k.clone(),
            (None, p) => format!("{}{name}", folder_prefix(p.as_deref())),
        };
        vec![(
            LocalFile {
                path: src.clone(),
                rel: name,
                size: meta.len(),
            },
            key,
        )]
    };
    let mut out = Vec::with_capacity(files.len());
    for (f, key) in files {
        if key.is_empty() {
            return Err(ActionError::permanent("the object key is empty"));
        }
        let content_type = input
            .content_type
            .clone()
            .unwrap_or_else(|| guess_content_type(&f.rel).to_string());
        out.push(Planned {
            path: f.path,
            key,
            size: f.size,
            content_type,
        });
    }
    Ok(out)
}

/// Uploads one file: PutObject, or a multipart upload from the threshold up.
async fn upload_one(
    job: Job,
    file: Planned,
    opts: Arc<UploadOptions>,
) -> Result<Value, ActionError> {
    if file.size >= opts.threshold {
        return upload_multipart(&job, &file, &opts).await;
    }
    let permit = job.permit().await?;
    let body = ByteStream::from_path(&file.path)
        .await
        .map_err(|e| ActionError::permanent(format!("cannot read {}: {e}", file.path.display())))?;
    let req = job
        .client
        .put_object()
        .bucket(&job.bucket)
        .key(&file.key)
        .content_type(&file.content_type)
        .set_storage_class(opts.storage_class.clone())
        .set_metadata(opts.metadata.clone())
        .body(body)
        .send();
    let out = tokio::select! {
        r = req => r.map_err(|e| from_sdk("PutObject", e))?,
        _ = job.cx.cancel.cancelled() => {
            return Err(ActionError::cancelled_with(format!("upload of {} cancelled", file.key)))
        }
    };
    drop(permit);
    job.cx.log.line(
        LogStream::Stdout,
        &format!("uploaded {} ({} bytes)", file.key, file.size),
    );
    Ok(json!({
        "key": file.key,
        "path": file.path.display().to_string(),
        "size": file.size,
        "etag": etag(out.e_tag()),
        "content_type": file.content_type,
        "multipart": false,
        "parts": 1,
    }))
}

/// Uploads one file in parts, each streamed from its place in the file; the upload is aborted
/// on any failure or cancellation so that no parts are left behind (and billed).
async fn upload_multipart(
    job: &Job,
    file: &Planned,
    opts: &UploadOptions,
) -> Result<Value, ActionError> {
    let part_size = part_size_for(file.size, opts.part_size);
    let created = job
        .client
        .create_multipart_upload()
        .bucket(&job.bucket)
        .key(&file.key)
        .content_type(&file.content_type)
        .set_storage_class(opts.storage_class.clone())
        .set_metadata(opts.metadata.clone())
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .map_err(|e| from_sdk("CreateMultipartUpload", e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| ActionError::permanent("CreateMultipartUpload: no upload id in the answer"))?
        .to_string();
    let parts = tokio::select! {
        r = upload_parts(job, file, &upload_id, part_size, opts.concurrency) => r,
        _ = job.cx.cancel.cancelled() => {
            Err(ActionError::cancelled_with(format!("upload of {} cancelled", file.key)))
        }
    };
    let completed = match parts {
        Ok(parts) => {
            let count = parts.len();
            let done = job
                .client
                .complete_multipart_upload()
                .bucket(&job.bucket)
                .key(&file.key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            match done {
                Ok(d) => Ok((etag(d.e_tag()), count)),
                Err(e) => Err(from_sdk("CompleteMultipartUpload", e)),
            }
        }
        Err(e) => Err(e),
    };
    match completed {
        Ok((etag, count)) => {
            job.cx.log.line(
                LogStream::Stdout,
                &format!("uploaded {} ({} bytes, {count} parts)", file.key, file.size),
            );
            Ok(json!({
                "key": file.key,
                "path": file.path.display().to_string(),
                "size": file.size,
                "etag": etag,
                "content_type": file.content_type,
                "multipart": true,
                "parts": count,
            }))
        }
        Err(e) => {
            abort(job, &file.key, &upload_id).await;
            Err(e)
        }
    }
}

/// Aborts a multipart upload (its parts are deleted), saying so in the log; best effort.
async fn abort(job: &Job, key: &str, upload_id: &str) {
    let req = job
        .client
        .abort_multipart_upload()
        .bucket(&job.bucket)
        .key(key)
        .upload_id(upload_id)
        .send();
    let line = match tokio::time::timeout(ABORT_TIMEOUT, req).await {
        Ok(Ok(_)) => format!("aborted the multipart upload of {key}"),
        Ok(Err(e)) => format!(
            "could not abort the multipart upload {upload_id} of {key}: {}",
            from_sdk("AbortMultipartUpload", e)
        ),
        Err(_) => format!("could not abort the multipart upload {upload_id} of {key}: timed out"),
    };
    job.cx.log.line(LogStream::Stderr, &line);
}

/// Uploads the parts of a file, `concurrency` at most in flight (and each holding one of the
/// job's request permits); the completed parts in order.
async fn upload_parts(
    job: &Job,
    file: &Planned,
    upload_id: &str,
    part_size: u64,
    concurrency: usize,
) -> Result<Vec<CompletedPart>, ActionError> {
    let count = file.size.div_ceil(part_size).max(1);
    let mut set: JoinSet<Result<CompletedPart, ActionError>> = JoinSet::new();
    let mut parts = Vec::with_capacity(count as usize);
    let mut next = 0u64;
    while next < count || !set.is_empty() {
        while next < count && set.len() < concurrency.max(1) {
            let offset = next * part_size;
            let length = part_size.min(file.size - offset);
            // Part numbers run from 1 to 10,000.
            let number =
                i32::try_from(next + 1).map_err(|_| ActionError::permanent("too many parts"))?;
            let job = job.clone();
            let path = file.path.clone();
            let key = file.key.clone();
            let upload_id = upload_id.to_string();
            set.spawn(async move {
                let _permit = job.permit().await?;
                let body = ByteStream::read_from()
                    .path(&path)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| {
                        ActionError::permanent(format!("cannot read {}: {e}", path.display()))
                    })?;
                let out = job
                    .client
                    .upload_part()
                    .bucket(&job.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| from_sdk("UploadPart", e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                    .build())
            });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(part))) => parts.push(part),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => {
                return Err(ActionError::permanent(format!(
                    "an upload task failed: {e}"
                )))
            }
            None => break,
        }
    }
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

/// `aws.s3.upload`.
pub struct Upload;

#[async_trait]
impl Action for Upload {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<UploadInput, Value>(
            "aws.s3.upload",
            "Upload a file or a folder to S3, large files in parts.",
            &format!(
                "Uploads `src` (relative to the runbook's folder) to `bucket`. A file goes to \
                 `key` (default `prefix/` + its name); a folder's files (recursively, symbolic \
                 links to files followed, `include`/`exclude` globs applied) go to `prefix/` + \
                 their path under it, with `/`, `concurrency` (default 4) requests at a time. \
                 `content_type` defaults to a guess from the extension (`.txt`/`.log` \
                 text/plain, `.json`, `.html`, `.csv`, `.yaml`, `.md`, `.gz` application/gzip, \
                 `.tar`, `.zip` …, else application/octet-stream); `storage_class` and \
                 `metadata` apply to every object. Files of `multipart_threshold` bytes or more \
                 (default 16 MiB) go up as a multipart upload of `part_size` parts (default \
                 8 MiB, at least 5 MiB, raised so a file needs at most 10,000), each part \
                 streamed from the file (never the whole file in memory) with a CRC32 \
                 checksum; the upload is aborted on any failure or cancellation. Existing \
                 objects are overwritten. The first failure stops a folder's upload; the \
                 error lists what was uploaded before it. Result: `uploaded` (each `key`, \
                 `path`, `size`, `etag` without quotes, `content_type`, `multipart`, \
                 `parts`), `count`, `bytes`. `--dry-run`: checks the bucket (HeadBucket) and \
                 lists what would be uploaded (`would_upload`, `count`, `bytes`, `dry_run: \
                 true`), writing nothing.\n\n{S3_DOC}"
            ),
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: UploadInput = parse(input)?;
        let threshold = input.multipart_threshold.unwrap_or(DEFAULT_THRESHOLD);
        let part_size = input.part_size.unwrap_or(DEFAULT_PART);
        if !(MIN_PART..=MAX_PART).contains(&part_size) {
            return Err(ActionError::permanent(format!(
                "part_size must be between 5 MiB ({MIN_PART}) and 5 GiB ({MAX_PART}) bytes"
            )));
        }
        let concurrency = input
            .concurrency
            .unwrap_or(DEFAULT_CONCURRENCY)
            .clamp(1, 64);
        let planned = plan_upload(&input, cx).await?;
        let bytes: u64 = planned.iter().map(|p| p.size).sum();
        let config = sdk_config(cx, &input.key()).await?;
        let client = client(&config, input.path_style);
        if cx.dry_run {
            head_bucket(&client, &input.bucket).await?;
            let would: Vec<Value> = planned
                .iter()
                .map(|p| {
                    json!({
                        "key": p.key,
                        "path": p.path.display().to_string(),
                        "size": p.size,
                        "content_type": p.content_type,
                        "multipart": p.size >= threshold,
                    })
                })
                .collect();
            cx.log.line(
                LogStream::Stdout,
                &format!(
                    "dry run: would upload {} file(s), {bytes} bytes, to s3://{}",
                    would.len(),
                    input.bucket
                ),
            );
            return Ok(json!({
                "dry_run": true,
                "would_upload": would,
                "uploaded": [],
                "count": planned.len(),
                "bytes": bytes,
            }));
        }
        if planned.is_empty() {
            cx.log.line(LogStream::Stdout, "no file to upload");
            return Ok(json!({"uploaded": [], "count": 0, "bytes": 0}));
        }
        let metadata = (!input.metadata.is_empty()).then(|| {
            input
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect()
        });
        let opts = Arc::new(UploadOptions {
            storage_class: input.storage_class.as_deref().map(StorageClass::from),
            metadata,
            threshold,
            part_size,
            concurrency,
        });
        let job = Job::new(client, &input.bucket, cx, concurrency);
        let (uploaded, failed) = for_all(&job, planned, concurrency, move |job, file| {
            upload_one(job, file, opts.clone())
        })
        .await;
        if let Some(e) = failed {
            let e = if cx.cancel.is_cancelled() && e.kind != ErrorKind::Cancelled {
                ActionError::cancelled()
            } else {
                e
            };
            return Err(with_done(e, "uploaded", &uploaded));
        }
        let bytes: u64 = uploaded.iter().filter_map(|u| u["size"].as_u64()).sum();
        Ok(json!({"uploaded": uploaded, "count": uploaded.len(), "bytes": bytes}))
    }
}

// ---------------------------------------------------------------------------------------------
// aws.s3.download

aws_input! {
    /// Inputs of `aws.s3.download`.
    pub struct DownloadInput {
        /// The bucket.
        pub bucket: String,
        /// One object to download to `dest`.
        #[serde(default)]
        pub key: Option<String>,
        /// Every object under this prefix, to the folder `dest`.
        #[serde(default)]
        pub prefix: Option<String>,
        /// The file (for `key`; an existing folder or a path ending in `/` receives the
        /// object under its name) or the folder (for `prefix`), relative to the runbook's
        /// folder.
        pub dest: String,
        /// Objects downloaded at once for a prefix (default 4).
        #[serde(default)]
        #[schemars(range(min = 1, max = 64))]
        pub concurrency: Option<usize>,
        /// Path-style addressing (default: when an endpoint URL is configured).
        #[serde(default)]
        pub path_style: Option<bool>,
    }
}

/// An object to download and where.
#[derive(Debug, Clone)]
struct Fetch {
    key: String,
    path: PathBuf,
}

/// `rel` as a safe relative path: no `..`, not absolute, not empty.
fn safe_relative(key: &str, rel: &str) -> Result<PathBuf, String> {
    let path = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok && path.components().any(|c| matches!(c, Component::Normal(_))) {
        Ok(path.to_path_buf())
    } else {
        Err(key.to_string())
    }
}

/// Writes the chunks of `rx` to `tmp` (its folder, the one of `path`, created); the bytes
/// written.
fn write_chunks<B: AsRef<[u8]>>(
    mut rx: tokio::sync::mpsc::Receiver<B>,
    path: &Path,
    tmp: &Path,
) -> Result<u64, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut f =
        std::fs::File::create(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut n = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        let bytes = chunk.as_ref();
        f.write_all(bytes)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        n += bytes.len() as u64;
    }
    f.sync_all()
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    Ok(n)
}

/// Downloads one object to a temporary file beside `path`, then renames it over `path`.
async fn download_one(job: Job, fetch: Fetch) -> Result<Value, ActionError> {
    let _permit = job.permit().await?;
    let req = job
        .client
        .get_object()
        .bucket(&job.bucket)
        .key(&fetch.key)
        .send();
    let out = tokio::select! {
        r = req => r.map_err(|e| from_sdk("GetObject", e))?,
        _ = job.cx.cancel.cancelled() => {
            return Err(ActionError::cancelled_with(format!("download of {} cancelled", fetch.key)))
        }
    };
    let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
    let mut body = out.body;
    let name = fetch
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "object".into());
    let tmp = fetch.path.with_file_name(format!(
        ".{name}.opsbook-{}-{:x}.part",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    // The body is written by a blocking task, chunk by chunk, as it arrives.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let writer = tokio::task::spawn_blocking({
        let tmp = tmp.clone();
        let path = fetch.path.clone();
        move || write_chunks(rx, &path, &tmp)
    });
    let streamed: Result<(), ActionError> = async {
        loop {
            let chunk = tokio::select! {
                c = body.try_next() => c.map_err(|e| {
                    ActionError::retryable(format!("GetObject {}: reading the body: {e}", fetch.key))
                })?,
                _ = job.cx.cancel.cancelled() => {
                    return Err(ActionError::cancelled_with(format!(
                        "download of {} cancelled", fetch.key
                    )))
                }
            };
            let Some(chunk) = chunk else { return Ok(()) };
            if tx.send(chunk).await.is_err() {
                // The writer stopped: its error says why.
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ActionError::permanent(format!("file system task failed: {e}")))
        .and_then(|r| r.map_err(ActionError::permanent));
    let result = match (streamed, written) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(n)) => match expected {
            Some(len) if len != n => Err(ActionError::retryable(format!(
                "GetObject {}: got {n} of {len} bytes",
                fetch.key
            ))),
            _ => Ok(n),
        },
    };
    let size = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &fetch.path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ActionError::permanent(format!(
            "cannot write {}: {e}",
            fetch.path.display()
        )));
    }
    job.cx.log.line(
        LogStream::Stdout,
        &format!("downloaded {} ({size} bytes)", fetch.key),
    );
    Ok(json!({"key": fetch.key, "path": fetch.path.display().to_string(), "size": size}))
}

/// `aws.s3.download`.
pub struct Download;

#[async_trait]
impl Action for Download {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DownloadInput, Value>(
            "aws.s3.download",
            "Download an object, or every object under a prefix, from S3.",
            &format!(
                "Downloads `key` to the file `dest` (an existing folder, or a path ending in \
                 `/`, receives it under the key's last segment), or every object under \
                 `prefix` into the folder `dest`, each at the key's path after the prefix \
                 (folder markers, keys ending in `/`, are skipped), `concurrency` (default 4) \
                 at a time. `dest` is relative to the runbook's folder; folders are created. \
                 Keys that would land outside `dest` (a `..` segment, a leading `/`) are \
                 refused before anything is downloaded. Each body is streamed to a temporary \
                 file beside its destination and renamed over it once complete (existing files \
                 are replaced; a failed download leaves them untouched). Result: `files` (each \
                 `key`, `path`, `size`), `count`, `bytes`. `--dry-run`: describes the step \
                 (`would_download`, `dry_run: true`) without calling S3 and downloads nothing.\n\n{S3_DOC}"
            ),
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DownloadInput = parse(input)?;
        let dest = cx.cwd.join(&input.dest);
        let what = match (&input.key, &input.prefix) {
            (Some(k), None) => format!("s3://{}/{k}", input.bucket),
            (None, Some(p)) => format!("every object under s3://{}/{p}", input.bucket),
            _ => return Err(ActionError::permanent("give either `key` or `prefix`")),
        };
        if cx.dry_run {
            let would = format!("download {what} to {}", dest.display());
            cx.log.line(LogStream::Stdout, &format!("would {would}"));
            return Ok(json!({
                "dry_run": true,
                "would_download": would,
                "files": [],
                "count": 0,
                "bytes": 0,
            }));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = client(&config, input.path_style);
        let fetches: Vec<Fetch> = match (&input.key, &input.prefix) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ActionError::permanent("give either `key` or `prefix`"))
            }
            (Some(key), None) => {
                let path = if input.dest.ends_with('/') || dest.is_dir() {
                    let last = key.rsplit('/').next().unwrap_or(key);
                    dest.join(safe_relative(key, last).map_err(|k| {
                        ActionError::permanent(format!(
                            "the key {k:?} has no file name to save under; give a file as `dest`"
                        ))
                    })?)
                } else {
                    dest.clone()
                };
                vec![Fetch {
                    key: key.clone(),
                    path,
                }]
            }
            (None, Some(prefix)) => {
                let objects = list_all(&client, &input.bucket, Some(prefix), None, None, None)
                    .await?
                    .0;
                let mut out = Vec::new();
                let mut refused = Vec::new();
                for o in objects {
                    let Some(key) = o.key() else { continue };
                    if key.ends_with('/') {
                        continue;
                    }
                    let mut rel = key.strip_prefix(prefix.as_str()).unwrap_or(key);
                    if !prefix.is_empty() && !prefix.ends_with('/') {
                        rel = rel.strip_prefix('/').unwrap_or(rel);
                    }
                    match safe_relative(key, rel) {
                        Ok(p) => out.push(Fetch {
                            key: key.to_string(),
                            path: dest.join(p),
                        }),
                        Err(k) => refused.push(k),
                    }
                }
                if !refused.is_empty() {
                    return Err(ActionError::permanent(format!(
                        "refusing keys that would be written outside {}: {}; nothing was \
                         downloaded",
                        dest.display(),
                        refused.join(", ")
                    ))
                    .with_details(json!({"refused": refused})));
                }
                out
            }
        };
        if fetches.is_empty() {
            cx.log.line(LogStream::Stdout, "no object under the prefix");
            return Ok(json!({"files": [], "count": 0, "bytes": 0}));
        }
        let concurrency = input
            .concurrency
            .unwrap_or(DEFAULT_CONCURRENCY)
            .clamp(1, 64);
        let job = Job::new(client, &input.bucket, cx, concurrency);
        let (files, failed) = for_all(&job, fetches, concurrency, download_one).await;
        if let Some(e) = failed {
            let e = if cx.cancel.is_cancelled() && e.kind != ErrorKind::Cancelled {
                ActionError::cancelled()
            } else {
                e
            };
            return Err(with_done(e, "downloaded", &files));
        }
        let bytes: u64 = files.iter().filter_map(|f| f["size"].as_u64()).sum();
        Ok(json!({"files": files, "count": files.len(), "bytes": bytes}))
    }
}

// ---------------------------------------------------------------------------------------------
// aws.s3.list

aws_input! {
    /// Inputs of `aws.s3.list`.
    pub struct ListInput {
        /// The bucket.
        pub bucket: String,
        /// Only keys that start with this.
        #[serde(default)]
        pub prefix: Option<String>,
        /// Group keys at this character (`/`): keys past it are summed up in `prefixes`.
        #[serde(default)]
        pub delimiter: Option<String>,
        /// At most this many objects (default: all).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_keys: Option<usize>,
        /// Keys per ListObjectsV2 call (default and most 1000).
        #[serde(default)]
        #[schemars(range(min = 1, max = 1000))]
        pub page_size: Option<i32>,
        /// Path-style addressing (default: when an endpoint URL is configured).
        #[serde(default)]
        pub path_style: Option<bool>,
    }
}

/// Lists objects (every page, or up to `max_keys`): the objects, the common prefixes, whether
/// `max_keys` cut the listing short, and the number of calls.
async fn list_all(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: Option<&str>,
    delimiter: Option<&str>,
    max_keys: Option<usize>,
    page_size: Option<i32>,
) -> Result<(Vec<aws_sdk_s3::types::Object>, Vec<String>, bool, usize), ActionError> {
    let mut page = page_size.unwrap_or(1000).clamp(1, 1000);
    if let Some(max) = max_keys {
        page = page.min(i32::try_from(max).unwrap_or(1000).max(1));
    }
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .set_prefix(prefix.filter(|p| !p.is_empty()).map(str::to_string))
        .set_delimiter(delimiter.map(str::to_string))
        .into_paginator()
        .page_size(page)
        .send();
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    let mut calls = 0;
    while let Some(p) = pages.next().await {
        let p = p.map_err(|e| from_sdk("ListObjectsV2", e))?;
        calls += 1;
        objects.extend(p.contents().iter().cloned());
        prefixes.extend(
            p.common_prefixes()
                .iter()
                .filter_map(|c| c.prefix().map(str::to_string)),
        );
        if let Some(max) = max_keys {
            if objects.len() >= max {
                let more = objects.len() > max || p.is_truncated().unwrap_or(false);
                objects.truncate(max);
                return Ok((objects, prefixes, more, calls));
            }
        }
    }
    Ok((objects, prefixes, false, calls))
}

/// `aws.s3.list`.
pub struct List;

#[async_trait]
impl Action for List {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ListInput, Value>(
            "aws.s3.list",
            "List the objects of an S3 bucket under a prefix, every page.",
            &format!(
                "Lists `bucket` (ListObjectsV2, following every page of `page_size` keys, \
                 default 1000) under `prefix`, at most `max_keys` objects; with `delimiter` \
                 (`/`), keys past it are grouped into `prefixes`. Result: `objects` (each \
                 `key`, `size`, `last_modified` RFC 3339, `etag` without quotes, \
                 `storage_class`), `prefixes`, `keys`, `count`, `bytes`, `truncated` (whether \
                 `max_keys` left objects out), `pages`. `--dry-run`: runs (it changes \
                 nothing).\n\n{S3_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ListInput = parse(input)?;
        let config = sdk_config(cx, &input.key()).await?;
        let client = client(&config, input.path_style);
        let listing = list_all(
            &client,
            &input.bucket,
            input.prefix.as_deref(),
            input.delimiter.as_deref(),
            input.max_keys,
            input.page_size,
        );
        let (objects, prefixes, truncated, calls) = tokio::select! {
            r = listing => r?,
            _ = cx.cancel.cancelled() => return Err(ActionError::cancelled()),
        };
        let objects: Vec<Value> = objects
            .iter()
            .map(|o| {
                json!({
                    "key": o.key(),
                    "size": o.size(),
                    "last_modified": o.last_modified().map(date),
                    "etag": etag(o.e_tag()),
                    "storage_class": o.storage_class().map(|s| s.as_str()),
                })
            })
            .collect();
        let keys: Vec<Value> = objects.iter().map(|o| o["key"].clone()).collect();
        let bytes: i64 = objects.iter().filter_map(|o| o["size"].as_i64()).sum();
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "{} object(s), {bytes} bytes, {} prefix(es) in {calls} page(s)",
                objects.len(),
                prefixes.len()
            ),
        );
        Ok(json!({
            "objects": objects,
            "prefixes": prefixes,
            "keys": keys,
            "count": keys.len(),
            "bytes": bytes,
            "truncated": truncated,
            "pages": calls,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// aws.s3.delete

aws_input! {
    /// Inputs of `aws.s3.delete`.
    pub struct DeleteInput {
        /// The bucket.
        pub bucket: String,
        /// The keys to delete.
        #[serde(default)]
        pub keys: Vec<String>,
        /// Delete every object whose key starts with this (an empty prefix needs `all`).
        #[serde(default)]
        pub prefix: Option<String>,
        /// Allow an empty or missing prefix: delete every object of the bucket.
        #[serde(default)]
        pub all: bool,
        /// Refuse (and delete nothing) when more objects than this would be deleted.
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_objects: Option<usize>,
        /// Path-style addressing (default: when an endpoint URL is configured).
        #[serde(default)]
        pub path_style: Option<bool>,
    }
}

/// `aws.s3.delete`.
pub struct DeleteObjects;

#[async_trait]
impl Action for DeleteObjects {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DeleteInput, Value>(
            "aws.s3.delete",
            "Delete S3 objects by keys or everything under a prefix.",
            &format!(
                "Deletes `keys`, or every object under `prefix` (listed first, every page), \
                 with DeleteObjects in batches of 1000. An empty prefix (or `all` without a \
                 prefix) deletes the whole bucket's objects and is refused unless `all: true`. \
                 More objects than `max_objects` fails the step before anything is deleted. \
                 S3 reports keys that did not exist as deleted. In a versioned bucket, current \
                 versions get a delete marker (older versions stay). Per-key errors \
                 (`AccessDenied` …) fail the step, listing them (`errors` in the details, with \
                 the keys that were deleted). Result: `deleted` (keys), `count`, `errors` \
                 (empty). `--dry-run`: checks the bucket (HeadBucket), lists what would be \
                 deleted (`would_delete`, `count`, `dry_run: true`) and deletes nothing.\n\n\
                 {S3_DOC}"
            ),
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DeleteInput = parse(input)?;
        let config = sdk_config(cx, &input.key()).await?;
        let client = client(&config, input.path_style);
        let keys: Vec<String> = match (&input.prefix, input.keys.is_empty()) {
            (Some(_), false) => {
                return Err(ActionError::permanent(
                    "give either `keys` or `prefix`, not both",
                ))
            }
            (None, false) => {
                if input.all {
                    return Err(ActionError::permanent(
                        "`all` goes with a prefix (or none), not with `keys`",
                    ));
                }
                input.keys.clone()
            }
            (prefix, true) => {
                let prefix = prefix.as_deref().unwrap_or("");
                if prefix.is_empty() && !input.all {
                    return Err(ActionError::permanent(
                        "an empty prefix deletes every object of the bucket: give `keys`, a \
                         `prefix`, or `all: true`",
                    ));
                }
                if cx.dry_run {
                    head_bucket(&client, &input.bucket).await?;
                }
                let listing = list_all(&client, &input.bucket, Some(prefix), None, None, None);
                let (objects, ..) = tokio::select! {
                    r = listing => r?,
                    _ = cx.cancel.cancelled() => return Err(ActionError::cancelled()),
                };
                objects
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string))
                    .collect()
            }
        };
        if let Some(max) = input.max_objects {
            if keys.len() > max {
                return Err(ActionError::permanent(format!(
                    "{} objects would be deleted, more than max_objects ({max}); nothing was \
                     deleted",
                    keys.len()
                ))
                .with_details(json!({"count": keys.len(), "max_objects": max})));
            }
        }
        if cx.dry_run {
            if input.prefix.is_none() && !input.all {
                head_bucket(&client, &input.bucket).await?;
            }
            cx.log.line(
                LogStream::Stdout,
                &format!(
                    "dry run: would delete {} object(s) of s3://{}",
                    keys.len(),
                    input.bucket
                ),
            );
            return Ok(json!({
                "dry_run": true,
                "would_delete": keys,
                "deleted": [],
                "count": keys.len(),
                "errors": [],
            }));
        }
        let mut deleted: Vec<String> = Vec::new();
        let mut errors: Vec<Value> = Vec::new();
        for batch in keys.chunks(DELETE_BATCH) {
            if cx.cancel.is_cancelled() {
                return Err(with_done(
                    ActionError::cancelled(),
                    "deleted",
                    &to_values(&deleted),
                ));
            }
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ActionError::permanent(format!("DeleteObjects: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(false)
                .build()
                .map_err(|e| ActionError::permanent(format!("DeleteObjects: {e}")))?;
            let out = client
                .delete_objects()
                .bucket(&input.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| {
                    with_done(
                        from_sdk("DeleteObjects", e),
                        "deleted",
                        &to_values(&deleted),
                    )
                })?;
            deleted.extend(
                out.deleted()
                    .iter()
                    .filter_map(|d| d.key().map(str::to_string)),
            );
            errors.extend(
                out.errors()
                    .iter()
                    .map(|e| json!({"key": e.key(), "code": e.code(), "message": e.message()})),
            );
        }
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "deleted {} object(s) of s3://{}",
                deleted.len(),
                input.bucket
            ),
        );
        if !errors.is_empty() {
            let listed: Vec<String> = errors
                .iter()
                .take(10)
                .map(|e| {
                    format!(
                        "{}: {}: {}",
                        e["key"].as_str().unwrap_or("?"),
                        e["code"].as_str().unwrap_or("Unknown"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let more = if errors.len() > 10 {
                format!(" … and {} more", errors.len() - 10)
            } else {
                String::new()
            };
            return Err(ActionError::permanent(format!(
                "DeleteObjects: {} key(s) not deleted ({} deleted): {}{more}",
                errors.len(),
                deleted.len(),
                listed.join("; ")
            ))
            .with_details(json!({"errors": errors, "deleted": deleted})));
        }
        Ok(json!({"deleted": deleted, "count": deleted.len(), "errors": errors}))
    }
}

fn to_values(keys: &[String]) -> Vec<Value> {
    keys.iter().map(|k| Value::String(k.clone())).collect()
}

// ---------------------------------------------------------------------------------------------
// aws.s3.presign

/// The HTTP method a presigned URL allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Download the object (GetObject).
    #[default]
    #[serde(alias = "GET")]
    Get,
    /// Upload the object (PutObject).
    #[serde(alias = "PUT")]
    Put,
}

aws_input! {
    /// Inputs of `aws.s3.presign`.
    pub struct PresignInput {
        /// The bucket.
        pub bucket: String,
        /// The object's key.
        pub key: String,
        /// `get` (download, default) or `put` (upload).
        #[serde(default)]
        pub method: Method,
        /// How long the URL works (default 15m, at most 7 days).
        #[serde(default)]
        pub expires_in: Option<DurationSpec>,
        /// For `put`: the Content-Type the uploader must send (signed into the URL).
        #[serde(default)]
        pub content_type: Option<String>,
        /// Path-style addressing (default: when an endpoint URL is configured).
        #[serde(default)]
        pub path_style: Option<bool>,
    }
}

/// `aws.s3.presign`.
pub struct Presign;

#[async_trait]
impl Action for Presign {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PresignInput, Value>(
            "aws.s3.presign",
            "Make a presigned URL to download or upload one S3 object.",
            &format!(
                "Signs (SigV4, locally: no call to AWS) a URL that lets whoever holds it `get` \
                 (default) or `put` the object `key` of `bucket` for `expires_in` (default 15m, \
                 at most 7 days; a URL signed with temporary credentials stops working when \
                 they expire). For `put`, `content_type` is signed in and the uploader must \
                 send it. The URL is a bearer credential: it is in the step's result (that is \
                 the point), hence in the run report; share it only with whom it is for and \
                 keep `expires_in` short. Result: `url`, `method` (`GET`/`PUT`), `headers` \
                 (the headers the request must carry), `expires_at` (RFC 3339), `expires_in` \
                 (seconds). `--dry-run`: runs (it changes nothing).\n\n{S3_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PresignInput = parse(input)?;
        let expires_in = input
            .expires_in
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(15 * 60));
        if expires_in < Duration::from_secs(1) || expires_in > MAX_PRESIGN {
            return Err(ActionError::permanent(
                "expires_in must be between 1s and 7 days (S3's limit for SigV4 URLs)",
            ));
        }
        if input.content_type.is_some() && input.method != Method::Put {
            return Err(ActionError::permanent(
                "`content_type` applies to `method: put`",
            ));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let path_style = input
            .path_style
            .unwrap_or_else(|| config.endpoint_url().is_some());
        // No checksum headers or parameters: a URL is used by curl or a browser, which would
        // not send them.
        let conf = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let start = SystemTime::now();
        let presigning = PresigningConfig::builder()
            .start_time(start)
            .expires_in(expires_in)
            .build()
            .map_err(|e| ActionError::permanent(format!("expires_in: {e}")))?;
        let presigned = match input.method {
            Method::Get => client
                .get_object()
                .bucket(&input.bucket)
                .key(&input.key)
                .presigned(presigning)
                .await
                .map_err(|e| from_sdk("presign GetObject", e))?,
            Method::Put => client
                .put_object()
                .bucket(&input.bucket)
                .key(&input.key)
                .set_content_type(input.content_type.clone())
                .presigned(presigning)
                .await
                .map_err(|e| from_sdk("presign PutObject", e))?,
        };
        let headers: Map<String, Value> = presigned
            .headers()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let expires_at = date(&aws_smithy_types::DateTime::from(start + expires_in));
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "presigned {} s3://{}/{} until {expires_at}",
                presigned.method(),
                input.bucket,
                input.key
            ),
        );
        Ok(json!({
            "url": presigned.uri(),
            "method": presigned.method(),
            "headers": headers,
            "expires_at": expires_at,
            "expires_in": expires_in.as_secs(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("*.log", "a.log"));
        assert!(matches("*.log", "sub/dir/a.log"));
        assert!(!matches("*.log", "a.log.gz"));
        assert!(matches("app/**/*.log", "app/x/y/a.log"));
        assert!(matches("app/**/*.log", "app/a.log"));
        assert!(!matches("app/*.log", "app/x/a.log"));
        assert!(matches("a?c.txt", "abc.txt"));
        assert!(matches("**", "any/thing"));
    }

    #[test]
    fn content_types_and_parts() {
        assert_eq!(guess_content_type("x.LOG"), "text/plain");
        assert_eq!(guess_content_type("x.tar.gz"), "application/gzip");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
        assert_eq!(part_size_for(20 * MIB, 8 * MIB), 8 * MIB);
        assert!(part_size_for(200_000 * MIB, 8 * MIB) * MAX_PARTS >= 200_000 * MIB);
    }

    #[test]
    fn traversal_is_refused() {
        assert!(safe_relative("k", "a/b.txt").is_ok());
        assert!(safe_relative("k", "../x").is_err());
        assert!(safe_relative("k", "a/../../x").is_err());
        assert!(safe_relative("k", "/etc/passwd").is_err());
        assert!(safe_relative("k", "").is_err());
        assert!(safe_relative("k", "..").is_err());
    }

    #[test]
    fn prefixes_become_folders() {
        assert_eq!(folder_prefix(Some("logs")), "logs/");
        assert_eq!(folder_prefix(Some("logs/")), "logs/");
        assert_eq!(folder_prefix(Some("")), "");
        assert_eq!(folder_prefix(None), "");
    }
}
