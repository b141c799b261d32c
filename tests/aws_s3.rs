//! End-to-end tests of the `aws.s3.*` actions through the `opsbook` binary against the moto
//! server (`opsbook_testkit::moto`), with boto3 for fixtures and checks.
//!
//! Where moto simplifies S3: it checks no signature, so a presigned URL is only shown to point
//! at the object, carry SigV4 query parameters and serve it (not to expire); it is strongly
//! consistent; storage classes are recorded, not acted on. Moto 5.2 names the root element of
//! CompleteMultipartUpload's answer `CompleteMultipartUploadResponse` (S3:
//! `...Result`, getmoto/moto#10055), which the Rust SDK cannot read: the multipart tests go
//! through `aws.s3.upload`'s fallback (HeadObject confirms the completed object).

mod common;
use common::*;

use opsbook_testkit::moto::Moto;
use serde_json::Value;

/// A boto3 S3 client with path-style addressing (moto serves no bucket subdomains).
const PY: &str = "import boto3, json, hashlib\n\
from botocore.config import Config\n\
s3 = boto3.client('s3', config=Config(s3={'addressing_style': 'path'}))\n";

/// Runs `code` after [`PY`]; its stdout.
fn py(moto: &Moto, code: &str) -> String {
    boto3(moto, &format!("{PY}{code}"))
}

fn start() -> Moto {
    Moto::start().unwrap_or_else(|e| panic!("{e}"))
}

/// The keys of a bucket (all of them), sorted.
fn keys(moto: &Moto, bucket: &str) -> Vec<String> {
    let out = py(
        moto,
        &format!(
            "ks = []\n\
             for p in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}'):\n    \
                 ks += [o['Key'] for o in p.get('Contents', [])]\n\
             print(json.dumps(sorted(ks)))\n"
        ),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

#[test]
fn upload_folder_with_prefix_content_types_metadata_and_dry_run() {
    let moto = start();
    let d = Dir::new("s3-upload-folder");
    py(&moto, "s3.create_bucket(Bucket='logs')");
    d.write("logs/app.log", "line 1\nline 2\n");
    d.write("logs/data.json", r#"{"a": 1}"#);
    d.write("logs/notes.md", "# notes");
    d.write("logs/raw.bin", [0u8, 1, 2, 3]);
    d.write("logs/sub/page.html", "<p>hi</p>");
    d.write("logs/sub/archive.tar.gz", [0x1fu8, 0x8b, 0, 0]);
    d.write("logs/sub/deeper/table.csv", "a,b\n1,2\n");
    d.write("logs/skip.tmp", "scratch");
    d.write("logs/sub/skip.tmp", "scratch");
    let rb = r#"version: 1
name: up
steps:
  - id: up
    uses: aws.s3.upload
    with:
      bucket: logs
      src: logs
      prefix: backup/2024
      exclude: ["*.tmp"]
      metadata: {owner: sre, build: 42}
      storage_class: STANDARD_IA
  - id: top
    uses: aws.s3.list
    with:
      bucket: logs
      prefix: backup/2024/
      delimiter: /
"#;
    // Dry run: the bucket is checked and the plan listed; nothing is written.
    let (code, report, o) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = &step(&report, "up")["result"];
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(r["count"], 7, "{r}");
    assert_eq!(r["would_upload"][0]["key"], "backup/2024/app.log", "{r}");
    assert!(
        keys(&moto, "logs").is_empty(),
        "the dry run uploaded something"
    );

    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = &step(&report, "up")["result"];
    let want = [
        "backup/2024/app.log",
        "backup/2024/data.json",
        "backup/2024/notes.md",
        "backup/2024/raw.bin",
        "backup/2024/sub/archive.tar.gz",
        "backup/2024/sub/deeper/table.csv",
        "backup/2024/sub/page.html",
    ];
    let got: Vec<String> = r["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "{r}");
    assert_eq!(r["count"], 7);
    let bytes: u64 = [14, 8, 7, 4, 4, 8, 9].iter().sum();
    assert_eq!(r["bytes"], bytes, "{r}");
    assert!(r["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["multipart"] == false
            && u["parts"] == 1
            && !u["etag"].as_str().unwrap().contains('"')));
    assert_eq!(keys(&moto, "logs"), want);

    let heads = py(
        &moto,
        "out = {}\n\
         for k in ['app.log', 'data.json', 'notes.md', 'raw.bin', 'sub/archive.tar.gz', 'sub/deeper/table.csv', 'sub/page.html']:\n    \
             h = s3.head_object(Bucket='logs', Key='backup/2024/' + k)\n    \
             out[k] = [h['ContentType'], h['Metadata'], h.get('StorageClass')]\n\
         print(json.dumps(out))\n",
    );
    let heads: Value = serde_json::from_str(&heads).unwrap();
    for (file, ct) in [
        ("app.log", "text/plain"),
        ("data.json", "application/json"),
        ("notes.md", "text/markdown"),
        ("raw.bin", "application/octet-stream"),
        ("sub/archive.tar.gz", "application/gzip"),
        ("sub/deeper/table.csv", "text/csv"),
        ("sub/page.html", "text/html"),
    ] {
        assert_eq!(heads[file][0], ct, "{file}: {heads}");
        assert_eq!(heads[file][1]["owner"], "sre", "{file}: {heads}");
        assert_eq!(heads[file][1]["build"], "42", "{file}: {heads}");
        assert_eq!(heads[file][2], "STANDARD_IA", "{file}: {heads}");
    }

    // The delimiter groups what is below a `/`.
    let top = &step(&report, "top")["result"];
    assert_eq!(
        strs(&top["keys"]),
        [
            "backup/2024/app.log",
            "backup/2024/data.json",
            "backup/2024/notes.md",
            "backup/2024/raw.bin"
        ],
        "{top}"
    );
    assert_eq!(strs(&top["prefixes"]), ["backup/2024/sub/"], "{top}");

    // One file, with an explicit key and content type; include filters a folder.
    let rb = r#"version: 1
name: up-one
steps:
  - id: one
    uses: aws.s3.upload
    with: {bucket: logs, src: logs/app.log, key: single/app.txt, content_type: text/x-log}
  - id: named
    uses: aws.s3.upload
    with: {bucket: logs, src: logs/data.json, prefix: named}
  - id: only_html
    uses: aws.s3.upload
    with: {bucket: logs, src: logs, prefix: html/, include: ["sub/*.html", "*.md"]}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        step(&report, "one")["result"]["uploaded"][0]["key"],
        "single/app.txt"
    );
    assert_eq!(
        step(&report, "named")["result"]["uploaded"][0]["key"],
        "named/data.json"
    );
    let html = &step(&report, "only_html")["result"];
    let got: Vec<&str> = html["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["key"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["html/notes.md", "html/sub/page.html"], "{html}");
    let ct = py(
        &moto,
        "print(s3.head_object(Bucket='logs', Key='single/app.txt')['ContentType'])",
    );
    assert_eq!(ct, "text/x-log");
}

/// `len` bytes that vary: a pseudo-random MiB, each copy stamped with its index (so that a
/// part put in the wrong place shows).
fn big_content(len: usize) -> Vec<u8> {
    const BLOCK: usize = 1024 * 1024;
    let mut x: u32 = 0x1234_5678;
    let block: Vec<u8> = (0..BLOCK)
        .map(|_| {
            // xorshift
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let mut out = Vec::with_capacity(len);
    let mut i: u64 = 0;
    while out.len() < len {
        let start = out.len();
        out.extend_from_slice(&block[..BLOCK.min(len - start)]);
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(out.len() - start);
        out[start..start + n].copy_from_slice(&stamp[..n]);
        i += 1;
    }
    out
}

#[test]
fn multipart_upload_then_download_is_byte_identical() {
    let moto = start();
    let d = Dir::new("s3-multipart");
    py(&moto, "s3.create_bucket(Bucket='big')");
    let content = big_content(20 * 1024 * 1024);
    d.write("data/big.bin", &content);
    let rb = r#"version: 1
name: mp
steps:
  - id: up
    uses: aws.s3.upload
    with: {bucket: big, src: data/big.bin, key: blobs/big.bin}
  - id: down
    uses: aws.s3.download
    with: {bucket: big, key: blobs/big.bin, dest: dl/copy.bin}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let up = &step(&report, "up")["result"]["uploaded"][0];
    assert_eq!(up["multipart"], true, "{up}");
    // 8 MiB + 8 MiB + 4 MiB.
    assert_eq!(up["parts"], 3, "{up}");
    assert_eq!(up["size"], 20 * 1024 * 1024, "{up}");
    assert!(up["etag"].as_str().unwrap().ends_with("-3"), "{up}");
    let head = py(
        &moto,
        "h = s3.head_object(Bucket='big', Key='blobs/big.bin')\n\
         body = s3.get_object(Bucket='big', Key='blobs/big.bin')['Body'].read()\n\
         u = s3.list_multipart_uploads(Bucket='big').get('Uploads', [])\n\
         print(json.dumps([h['ContentLength'], h['ETag'], h['ContentType'], hashlib.sha256(body).hexdigest(), len(u)]))\n",
    );
    let head: Value = serde_json::from_str(&head).unwrap();
    assert_eq!(head[0], 20 * 1024 * 1024, "{head}");
    assert!(head[1].as_str().unwrap().ends_with("-3\""), "{head}");
    assert_eq!(head[2], "application/octet-stream", "{head}");
    assert_eq!(head[4], 0, "a multipart upload was left open: {head}");
    let sha = py(
        &moto,
        &format!(
            "print(hashlib.sha256(open('{}', 'rb').read()).hexdigest())",
            d.path("data/big.bin").display()
        ),
    );
    assert_eq!(head[3], sha.as_str(), "the object differs from the file");

    let down = &step(&report, "down")["result"];
    assert_eq!(down["count"], 1, "{down}");
    assert_eq!(down["bytes"], 20 * 1024 * 1024, "{down}");
    let copy = std::fs::read(d.path("dl/copy.bin")).unwrap();
    assert!(
        copy == content,
        "the downloaded file differs from the uploaded one"
    );
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(d.path("dl"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["copy.bin"]);

    // Smaller parts than the default, more of them, several in flight.
    let rb = r#"version: 1
name: mp2
steps:
  - id: up
    uses: aws.s3.upload
    with: {bucket: big, src: data, prefix: small-parts, multipart_threshold: 6291456, part_size: 5242880, concurrency: 3}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let up = &step(&report, "up")["result"]["uploaded"][0];
    assert_eq!(up["key"], "small-parts/big.bin", "{up}");
    assert_eq!(up["parts"], 4, "{up}");
    let sha2 = py(
        &moto,
        "print(hashlib.sha256(s3.get_object(Bucket='big', Key='small-parts/big.bin')['Body'].read()).hexdigest())",
    );
    assert_eq!(sha2, sha);
}

#[test]
fn cancelled_multipart_upload_is_aborted() {
    let moto = start();
    let d = Dir::new("s3-abort");
    py(&moto, "s3.create_bucket(Bucket='big')");
    // 32 parts of 5 MiB, one at a time: well over a second here, so the timeout falls in the
    // middle of the parts (a timeout after CompleteMultipartUpload was sent could not undo it).
    d.write("data/huge.bin", big_content(160 * 1024 * 1024));
    let rb = r#"version: 1
name: abort
steps:
  - id: up
    uses: aws.s3.upload
    timeout: 600ms
    with: {bucket: big, src: data/huge.bin, key: huge.bin, part_size: 5242880, concurrency: 1}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    let up = step(&report, "up");
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(up["status"], "timed_out", "{up}");
    assert!(
        text(&o).contains("aborted the multipart upload of huge.bin"),
        "{}",
        text(&o)
    );
    let left = py(
        &moto,
        "u = s3.list_multipart_uploads(Bucket='big').get('Uploads', [])\n\
         print(len(u))\n",
    );
    assert_eq!(
        left,
        "0",
        "the multipart upload was not aborted: {}",
        text(&o)
    );
    assert!(keys(&moto, "big").is_empty(), "{}", text(&o));
}

#[test]
fn download_key_and_prefix_and_refuse_traversal() {
    let moto = start();
    let d = Dir::new("s3-download");
    py(
        &moto,
        "s3.create_bucket(Bucket='data')\n\
         for k, v in [('data/a.txt', 'A'), ('data/sub/b.txt', 'BB'), ('data/sub/c.json', '{}'), ('data/', ''), ('other/x', 'X')]:\n    \
             s3.put_object(Bucket='data', Key=k, Body=v.encode())\n\
         s3.create_bucket(Bucket='evil')\n\
         for k in ['files/ok.txt', 'files/../escape.txt', 'files//abs.txt']:\n    \
             s3.put_object(Bucket='evil', Key=k, Body=b'x')\n",
    );
    std::fs::create_dir_all(d.path("into")).unwrap();
    let rb = r#"version: 1
name: down
steps:
  - id: one
    uses: aws.s3.download
    with: {bucket: data, key: data/a.txt, dest: one/a-copy.txt}
  - id: into_folder
    uses: aws.s3.download
    with: {bucket: data, key: data/sub/b.txt, dest: into}
  - id: tree
    uses: aws.s3.download
    with: {bucket: data, prefix: data/, dest: tree}
  - id: missing
    uses: aws.s3.download
    continue_on_error: true
    with: {bucket: data, key: data/nope.txt, dest: nope.txt}
  - id: evil
    uses: aws.s3.download
    continue_on_error: true
    with: {bucket: evil, prefix: files, dest: evil}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(d.path("one/a-copy.txt")).unwrap(),
        "A"
    );
    assert_eq!(std::fs::read_to_string(d.path("into/b.txt")).unwrap(), "BB");
    let tree = &step(&report, "tree")["result"];
    assert_eq!(tree["count"], 3, "{tree}");
    assert_eq!(tree["bytes"], 5, "{tree}");
    let files: Vec<&str> = tree["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["data/a.txt", "data/sub/b.txt", "data/sub/c.json"]);
    assert_eq!(std::fs::read_to_string(d.path("tree/a.txt")).unwrap(), "A");
    assert_eq!(
        std::fs::read_to_string(d.path("tree/sub/b.txt")).unwrap(),
        "BB"
    );
    assert_eq!(
        std::fs::read_to_string(d.path("tree/sub/c.json")).unwrap(),
        "{}"
    );
    let missing = step(&report, "missing");
    assert_eq!(missing["status"], "failed");
    let e = missing["error"].as_str().unwrap_or_default();
    assert!(e.contains("NoSuchKey"), "{missing}");
    assert!(!d.path("nope.txt").exists());

    let evil = step(&report, "evil");
    assert_eq!(evil["status"], "failed", "{evil}");
    let e = evil["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("files/../escape.txt") && e.contains("files//abs.txt"),
        "{evil}"
    );
    assert!(!e.contains("files/ok.txt"), "{evil}");
    assert!(!d.path("evil").exists(), "something was downloaded: {evil}");
    assert!(!d.path("escape.txt").exists());

    // Download is describe-only in a dry run.
    let rb = r#"version: 1
name: down-dry
steps:
  - id: tree
    uses: aws.s3.download
    with: {bucket: data, prefix: data/, dest: dry-tree}
"#;
    let (code, _, o) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(!d.path("dry-tree").exists());
}

#[test]
fn list_follows_pages_and_stops_at_max_keys() {
    let moto = start();
    let d = Dir::new("s3-list");
    py(
        &moto,
        "s3.create_bucket(Bucket='many')\n\
         for i in range(30):\n    \
             s3.put_object(Bucket='many', Key='p/k%02d' % i, Body=b'x' * i)\n\
         s3.put_object(Bucket='many', Key='q/other', Body=b'zz')\n",
    );
    let rb = r#"version: 1
name: list
steps:
  - id: all
    uses: aws.s3.list
    with: {bucket: many, prefix: p/, page_size: 10}
  - id: some
    uses: aws.s3.list
    with: {bucket: many, prefix: p/, page_size: 5, max_keys: 12}
  - id: whole
    uses: aws.s3.list
    with: {bucket: many}
  - id: none
    uses: aws.s3.list
    with: {bucket: many, prefix: nothing/}
"#;
    // It runs in a dry run too.
    let (code, report, o) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let all = &step(&report, "all")["result"];
    assert_eq!(all["count"], 30, "{all}");
    // 30 keys, 10 a page (moto may answer one more, empty page).
    assert!(all["pages"].as_u64().unwrap() >= 3, "{all}");
    let want: Vec<String> = (0..30).map(|i| format!("p/k{i:02}")).collect();
    assert_eq!(strs(&all["keys"]), want);
    assert_eq!(all["bytes"], (0..30).sum::<u64>(), "{all}");
    assert_eq!(all["truncated"], false);
    let first = &all["objects"][1];
    assert_eq!(first["key"], "p/k01");
    assert_eq!(first["size"], 1);
    assert_eq!(first["storage_class"], "STANDARD");
    assert!(!first["etag"].as_str().unwrap().contains('"'), "{first}");
    let lm = first["last_modified"].as_str().unwrap();
    assert!(
        lm.len() >= 20 && lm.as_bytes()[10] == b'T' && lm.ends_with('Z'),
        "{lm}"
    );

    let some = &step(&report, "some")["result"];
    assert_eq!(some["count"], 12, "{some}");
    assert_eq!(some["truncated"], true, "{some}");
    assert_eq!(strs(&some["keys"]), want[..12]);
    assert_eq!(some["pages"], 3, "{some}");

    assert_eq!(step(&report, "whole")["result"]["count"], 31);
    let none = &step(&report, "none")["result"];
    assert_eq!(none["count"], 0, "{none}");
    assert_eq!(none["objects"], Value::Array(vec![]));
}

#[test]
fn delete_by_keys_and_prefix_with_guards_and_dry_run() {
    let moto = start();
    let d = Dir::new("s3-delete");
    py(
        &moto,
        "s3.create_bucket(Bucket='trash')\n\
         for k in ['a', 'b', 'c', 'logs/1', 'logs/2', 'logs/sub/3', 'logsx/4']:\n    \
             s3.put_object(Bucket='trash', Key=k, Body=b'x')\n",
    );
    let all = vec!["a", "b", "c", "logs/1", "logs/2", "logs/sub/3", "logsx/4"];
    let rb = r#"version: 1
name: del
steps:
  - id: by_prefix
    uses: aws.s3.delete
    with: {bucket: trash, prefix: logs/}
  - id: by_keys
    uses: aws.s3.delete
    with: {bucket: trash, keys: [a, b]}
"#;
    // Dry run: asks S3 what would go, deletes nothing.
    let (code, report, o) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = &step(&report, "by_prefix")["result"];
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(
        strs(&r["would_delete"]),
        ["logs/1", "logs/2", "logs/sub/3"],
        "{r}"
    );
    assert_eq!(
        strs(&step(&report, "by_keys")["result"]["would_delete"]),
        ["a", "b"]
    );
    assert_eq!(keys(&moto, "trash"), all, "the dry run deleted something");

    // Guards: an empty prefix without `all`, more objects than max_objects.
    let rb = r#"version: 1
name: guards
steps:
  - id: empty
    uses: aws.s3.delete
    continue_on_error: true
    with: {bucket: trash, prefix: ""}
  - id: too_many
    uses: aws.s3.delete
    continue_on_error: true
    with: {bucket: trash, prefix: logs, max_objects: 2}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let e = step(&report, "empty")["error"].as_str().unwrap_or_default();
    assert!(e.contains("all: true"), "{e}");
    let e = step(&report, "too_many")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(e.contains("max_objects"), "{e}");
    assert_eq!(keys(&moto, "trash"), all, "a guard let a delete through");

    let rb = r#"version: 1
name: del
steps:
  - id: by_prefix
    uses: aws.s3.delete
    with: {bucket: trash, prefix: logs/}
  - id: by_keys
    uses: aws.s3.delete
    with: {bucket: trash, keys: [a, b]}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = &step(&report, "by_prefix")["result"];
    let mut deleted = strs(&r["deleted"]);
    deleted.sort();
    assert_eq!(deleted, ["logs/1", "logs/2", "logs/sub/3"], "{r}");
    assert_eq!(r["count"], 3);
    assert_eq!(r["errors"], Value::Array(vec![]));
    assert_eq!(step(&report, "by_keys")["result"]["count"], 2);
    assert_eq!(keys(&moto, "trash"), ["c", "logsx/4"]);

    // `all: true` empties the bucket, in batches.
    py(
        &moto,
        "for i in range(1005):\n    s3.put_object(Bucket='trash', Key='n/%04d' % i, Body=b'')\n",
    );
    let rb = r#"version: 1
name: all
steps:
  - id: everything
    uses: aws.s3.delete
    with: {bucket: trash, all: true}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "everything")["result"]["count"], 1007);
    assert!(keys(&moto, "trash").is_empty());
}

#[test]
fn presign_get_and_put() {
    let moto = start();
    let d = Dir::new("s3-presign");
    py(
        &moto,
        "s3.create_bucket(Bucket='share')\n\
         s3.put_object(Bucket='share', Key='reports/r.txt', Body=b'the report')\n",
    );
    let rb = r#"version: 1
name: presign
steps:
  - id: get
    uses: aws.s3.presign
    with: {bucket: share, key: reports/r.txt}
  - id: put
    uses: aws.s3.presign
    with: {bucket: share, key: inbox/up.txt, method: put, expires_in: 1h, content_type: text/plain}
  - id: too_long
    uses: aws.s3.presign
    continue_on_error: true
    with: {bucket: share, key: reports/r.txt, expires_in: 8d}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let get = &step(&report, "get")["result"];
    let url = get["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/share/reports/r.txt?", moto.url())),
        "{url}"
    );
    assert!(
        url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=900"),
        "{url}"
    );
    assert_eq!(get["method"], "GET");
    assert_eq!(get["expires_in"], 900);
    assert!(get["expires_at"].as_str().unwrap().ends_with('Z'), "{get}");
    // Fetched like a browser would, without credentials.
    let body = boto3(
        &moto,
        &format!("import urllib.request\nprint(urllib.request.urlopen({url:?}).read().decode())"),
    );
    assert_eq!(body, "the report");

    let put = &step(&report, "put")["result"];
    let url = put["url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");
    assert_eq!(put["method"], "PUT");
    boto3(
        &moto,
        &format!(
            "import urllib.request\n\
             r = urllib.request.Request({url:?}, data=b'uploaded via url', method='PUT', headers={{'Content-Type': 'text/plain'}})\n\
             urllib.request.urlopen(r).read()\n"
        ),
    );
    let got = py(
        &moto,
        "o = s3.get_object(Bucket='share', Key='inbox/up.txt')\n\
         print(o['Body'].read().decode(), o['ContentType'])\n",
    );
    assert_eq!(got, "uploaded via url text/plain");

    let e = step(&report, "too_long")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(e.contains("7 days"), "{e}");
}

#[test]
fn missing_bucket_fails_with_no_such_bucket() {
    let moto = start();
    let d = Dir::new("s3-errors");
    d.write("f.txt", "x");
    let rb = r#"version: 1
name: errors
steps:
  - id: upload
    uses: aws.s3.upload
    continue_on_error: true
    with: {bucket: no-such-bucket, src: f.txt}
  - id: list
    uses: aws.s3.list
    continue_on_error: true
    with: {bucket: no-such-bucket}
  - id: delete
    uses: aws.s3.delete
    continue_on_error: true
    with: {bucket: no-such-bucket, prefix: x/}
  - id: missing_src
    uses: aws.s3.upload
    continue_on_error: true
    with: {bucket: no-such-bucket, src: not-here}
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    for id in ["upload", "list", "delete"] {
        let s = step(&report, id);
        assert_eq!(s["status"], "failed", "{s}");
        let e = s["error"].as_str().unwrap_or_default();
        assert!(e.contains("NoSuchBucket"), "{id}: {s}");
    }
    let s = step(&report, "missing_src");
    assert!(
        s["error"].as_str().unwrap_or_default().contains("not-here"),
        "{s}"
    );

    // A dry run's check (HeadBucket) says the same.
    let (code, report, o) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    for id in ["upload", "delete"] {
        let s = step(&report, id);
        let e = s["error"].as_str().unwrap_or_default();
        assert!(e.contains("NoSuchBucket"), "{id}: {s}");
    }
}

#[test]
fn shipped_upload_logs_runbook() {
    let moto = start();
    let d = Dir::new("s3-runbook");
    py(&moto, "s3.create_bucket(Bucket='fleet-logs')");
    d.write("var/log/app/app.log.1.gz", [0x1fu8, 0x8b, 1, 2, 3]);
    d.write("var/log/app/app.log", "current\n");
    d.write("var/log/app/old/worker.log.gz", [0x1fu8, 0x8b, 9]);
    let logs = d.path("var/log/app");
    let logs_arg = format!("logs_dir={}", logs.display());
    let path = shipped("upload-logs-s3.yaml");

    // Dry run: the plan, nothing uploaded nor deleted.
    let (code, report, o) = run_file(
        &d,
        &path,
        &[
            "-p",
            "bucket=fleet-logs",
            "-p",
            &logs_arg,
            "-p",
            "delete_local=true",
            "--dry-run",
        ],
        |cmd| {
            moto.apply_env(cmd);
        },
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "upload")["result"]["count"], 3, "{report}");
    assert!(keys(&moto, "fleet-logs").is_empty());
    assert!(logs.join("app.log").exists());

    // Rotated logs only, to a given prefix, deleting them once verified.
    let (code, report, o) = run_file(
        &d,
        &path,
        &[
            "-p",
            "bucket=fleet-logs",
            "-p",
            &logs_arg,
            "-p",
            r#"include=["*.gz"]"#,
            "-p",
            "prefix=web-1/2024-06-01",
            "-p",
            "delete_local=true",
        ],
        |cmd| {
            moto.apply_env(cmd);
        },
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(report["outputs"]["count"], 2, "{}", report["outputs"]);
    assert_eq!(report["outputs"]["bytes"], 8, "{}", report["outputs"]);
    assert_eq!(report["outputs"]["listed"], 2, "{}", report["outputs"]);
    assert_eq!(
        report["outputs"]["deleted_local"], 2,
        "{}",
        report["outputs"]
    );
    assert_eq!(
        report["outputs"]["location"],
        "s3://fleet-logs/web-1/2024-06-01/"
    );
    assert_eq!(
        keys(&moto, "fleet-logs"),
        [
            "web-1/2024-06-01/app.log.1.gz",
            "web-1/2024-06-01/old/worker.log.gz"
        ]
    );
    assert!(!logs.join("app.log.1.gz").exists());
    assert!(!logs.join("old/worker.log.gz").exists());
    assert!(
        logs.join("app.log").exists(),
        "a file not shipped was deleted"
    );

    // Defaults: logs/<host>/<date>/, local files kept.
    let (code, report, o) = run_file(
        &d,
        &path,
        &["-p", "bucket=fleet-logs", "-p", &logs_arg],
        |cmd| {
            moto.apply_env(cmd);
        },
    );
    assert_eq!(code, 0, "{}", text(&o));
    let location = report["outputs"]["location"].as_str().unwrap();
    let date = &report["started_at"].as_str().unwrap()[..10];
    assert!(
        location.starts_with("s3://fleet-logs/logs/") && location.ends_with(&format!("/{date}/")),
        "{location}"
    );
    assert_eq!(report["outputs"]["count"], 1);
    assert_eq!(report["outputs"]["deleted_local"], 0);
    assert_eq!(step(&report, "delete_local")["status"], "skipped");
    assert!(logs.join("app.log").exists());
}
