//! Exec over WebSocket: `GET .../pods/{name}/exec?command=..&container=..&stdout=true..` with
//! `Upgrade: websocket` and the `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol.
//! After the 101 the command runs through the `FakeKube::on_exec` handler; its output goes
//! out as binary frames `[1]+stdout`, `[2]+stderr`, then `[3]+Status` (Success, or Failure
//! `NonZeroExitCode` with the exit code in `details.causes`), then a close frame. With
//! `stdin=true` the frames `[0]+data` are collected first, until the v5 close signal
//! `[255, 0]` (or the client's close frame).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::logs::container_of;
use super::server::{error_resp, full, Req, Resp, Target};
use super::status;
use super::{ExecCall, ExecResult, Shared};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
/// How long the server waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// With v4 and stdin, the end of stdin cannot be signalled: it ends after this long idle.
const V4_STDIN_IDLE: Duration = Duration::from_millis(500);

/// Answers the upgrade request (101, or a Status error) and runs the session after it.
pub(crate) fn upgrade(
    shared: Arc<Shared>,
    r: &Req,
    t: &Target,
    req: &mut Request<Incoming>,
) -> Resp {
    match prepare(&shared, r, t, req) {
        Ok((call, protocol, accept)) => {
            let on_upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                session(shared, ws, call, protocol).await;
            });
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert("Upgrade", HeaderValue::from_static("websocket"));
            h.insert("Connection", HeaderValue::from_static("Upgrade"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert("Sec-WebSocket-Accept", v);
            }
            h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
            resp
        }
        Err(e) => error_resp(&e),
    }
}

type Prepared = (ExecCall, &'static str, String);

fn prepare(
    shared: &Shared,
    r: &Req,
    t: &Target,
    req: &Request<Incoming>,
) -> status::ApiResult<Prepared> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ns = t.ns.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let pod = {
        let st = shared.store.lock().expect("store lock");
        st.get(&(String::new(), "pods".into(), ns.clone(), name.clone()))
            .cloned()
            .ok_or_else(|| status::not_found(t.r, &name))?
    };
    let container = container_of(&pod, r.query.get("container"))?;
    let command = r.query.all("command");
    if command.is_empty() {
        return Err(status::bad_request("you must specify at least 1 command"));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Err(status::bad_request(&format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let offered = header("sec-websocket-protocol");
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    let protocol = if offered.contains(&V5) {
        V5
    } else if offered.contains(&V4) {
        V4
    } else {
        return Err(status::bad_request(&format!(
            "unsupported WebSocket subprotocols {offered:?}: the fake speaks {V5} and {V4}"
        )));
    };
    let key = header("sec-websocket-key");
    if key.is_empty() {
        return Err(status::bad_request("missing Sec-WebSocket-Key"));
    }
    let call = ExecCall {
        namespace: ns,
        pod: name,
        container,
        command,
        stdin: r.query.flag("stdin").then(Vec::new),
        tty: r.query.flag("tty"),
        job: None,
    };
    Ok((call, protocol, derive_accept_key(key.as_bytes())))
}

/// The Status frame's JSON for a result.
fn status_json(call: &ExecCall, result: &ExecResult) -> serde_json::Value {
    if result.exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {}",
            call.command.join(" "),
            result.exit_code
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": result.exit_code.to_string()}]},
    })
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

async fn session<S>(
    shared: Arc<Shared>,
    mut ws: WebSocketStream<S>,
    mut call: ExecCall,
    protocol: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(stdin) = call.stdin.as_mut() {
        loop {
            let next = if protocol == V4 {
                match tokio::time::timeout(V4_STDIN_IDLE, ws.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            } else {
                ws.next().await
            };
            match next {
                Some(Ok(Message::Binary(b))) => match b.first() {
                    Some(0) => stdin.extend_from_slice(&b[1..]),
                    Some(255) if b.get(1) == Some(&0) => break,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
    }
    let handler = shared.exec.lock().expect("exec lock").clone();
    let call2 = call.clone();
    let result = tokio::task::spawn_blocking(move || match handler {
        Some(h) => h(&call2),
        None => ExecResult::no_handler(),
    })
    .await
    .unwrap_or_else(|_| ExecResult {
        stdout: String::new(),
        stderr: "the FakeKube::on_exec handler panicked\n".into(),
        exit_code: 1,
    });
    let mut frames = Vec::new();
    if !result.stdout.is_empty() {
        frames.push(frame(1, result.stdout.as_bytes()));
    }
    if !result.stderr.is_empty() {
        let channel = if call.tty { 1 } else { 2 };
        frames.push(frame(channel, result.stderr.as_bytes()));
    }
    let st = serde_json::to_vec(&status_json(&call, &result)).unwrap_or_default();
    frames.push(frame(3, &st));
    for f in frames {
        if ws.send(f).await.is_err() {
            return;
        }
    }
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_frames() {
        let call = ExecCall {
            namespace: "default".into(),
            pod: "p".into(),
            container: "c".into(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            stdin: None,
            tty: false,
            job: None,
        };
        let s = status_json(
            &call,
            &ExecResult {
                stdout: String::new(),
                stderr: String::new(),
                exit_code: 3,
            },
        );
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            status_json(&call, &ExecResult::ok("x"))["status"],
            "Success"
        );
    }
}
