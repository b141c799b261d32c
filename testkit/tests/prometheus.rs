//! Checks the Prometheus and Pushgateway test servers end to end: a gauge pushed to the
//! Pushgateway with a plain HTTP PUT comes back from a Prometheus query. Needs the Debian
//! packages `prometheus` and `prometheus-pushgateway`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use opsbook_testkit::prometheus::{Prometheus, Pushgateway};

/// A plain HTTP/1.0 request to `url` (`http://127.0.0.1:PORT/...`): the status code and body.
fn http(method: &str, url: &str, content_type: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_once('/').expect("URL with a path");
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} /{path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_pushed_gauge_comes_back_from_a_prometheus_query() {
    let started = Instant::now();
    let gateway = Pushgateway::start().unwrap_or_else(|e| panic!("{e}"));
    println!("Pushgateway ready after {:?}", started.elapsed());
    assert!(gateway.url().starts_with("http://127.0.0.1:"));

    // The job label "pushed" differs from the scrape job "testkit": it only survives the
    // scrape with honor_labels.
    let (status, body) = http(
        "PUT",
        &format!("{}/metrics/job/pushed", gateway.url()),
        "text/plain; version=0.0.4",
        "# TYPE demo gauge\ndemo{x=\"1\"} 42\n",
    );
    assert!((200..300).contains(&status), "PUT: HTTP {status}: {body}");

    let started = Instant::now();
    let prometheus = Prometheus::start(&[gateway.url()]).unwrap_or_else(|e| panic!("{e}"));
    println!("Prometheus ready after {:?}", started.elapsed());
    assert!(prometheus.url().starts_with("http://127.0.0.1:"));
    assert_ne!(prometheus.url(), gateway.url());

    let waited = Instant::now();
    prometheus
        .wait_for("demo", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "demo visible {:?} after wait_for began ({:?} after Prometheus started)",
        waited.elapsed(),
        started.elapsed()
    );

    let json = prometheus
        .query(r#"demo{job="pushed", x="1"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(json.contains(r#""status":"success""#), "{json}");
    assert!(json.contains(r#""42""#), "no 42 in {json}");
    assert!(json.contains(r#""job":"pushed""#), "{json}");

    // A syntax error fails at once instead of polling until the timeout.
    let started = Instant::now();
    let err = prometheus
        .wait_for("demo{", Duration::from_secs(20))
        .unwrap_err();
    assert!(err.contains("rejected"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = prometheus.query("demo{").unwrap_err();
    assert!(err.contains("HTTP 400"), "{err}");

    // A metric that never appears times out with the target states in the message.
    let err = prometheus
        .wait_for("no_such_metric", Duration::from_millis(500))
        .unwrap_err();
    assert!(err.contains("no sample"), "{err}");
    assert!(err.contains("/metrics up"), "{err}");

    let pids = [gateway.pid(), prometheus.pid()];
    let dirs = [gateway.dir().to_path_buf(), prometheus.dir().to_path_buf()];
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    let stopped = Instant::now();
    drop(prometheus);
    drop(gateway);
    println!("both stopped after {:?}", stopped.elapsed());
    for pid in pids {
        assert!(!process_exists(pid), "process {pid} still exists");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

#[test]
fn bad_scrape_targets_are_rejected_before_starting() {
    let err = Prometheus::start(&["127.0.0.1".to_string()]).unwrap_err();
    assert!(err.contains("not host:port"), "{err}");
    let err = Prometheus::start(&["127.0.0.1:1'\n- x".to_string()]).unwrap_err();
    assert!(err.contains("not host:port"), "{err}");
}

#[test]
fn several_servers_run_side_by_side() {
    let gateways: Vec<Pushgateway> = (0..3)
        .map(|_| Pushgateway::start().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let mut urls: Vec<String> = gateways.iter().map(Pushgateway::url).collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 3);
    let prometheus = Prometheus::start(&urls).unwrap_or_else(|e| panic!("{e}"));
    // Distinct job labels: with honor_labels, pushes without an instance label would
    // otherwise give the same series from every gateway.
    for (i, gateway) in gateways.iter().enumerate() {
        let (status, body) = http(
            "PUT",
            &format!("{}/metrics/job/side{i}", gateway.url()),
            "text/plain",
            &format!("side_by_side {}\n", gateway.pid()),
        );
        assert!((200..300).contains(&status), "PUT: HTTP {status}: {body}");
    }
    // Every gateway's push arrives.
    prometheus
        .wait_for("count(side_by_side) == 3", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
}
