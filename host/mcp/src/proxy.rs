//! The relay: two line streams (client and server), one writer for each, and a task per
//! `tools/call` that asks the gateway and then forwards, answers or holds the call.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{ErrorCode, NumberOrString, RequestId};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use writ_client::Client;
use writ_client::wire::{CompletionBody, ExecuteBody, ExecuteResponse, Verdict};

use crate::message::{self, FromClient, FromServer, IdKey, ToolCall};

/// Longest line read from either side (a message is one line on stdio).
const MAX_LINE_BYTES: usize = 16 << 20;
/// Tools whose annotations are remembered (a server's `tools/list` is untrusted input).
const MAX_TOOLS: usize = 10_000;
/// Messages waiting for each writer.
const QUEUED: usize = 256;
/// How long the proxy waits for its tasks (withdrawals, reports) and the server at the end.
const WIND_DOWN: Duration = Duration::from_secs(5);
/// How long a decision (or one round of waiting on a held call, past its own timeout) may
/// take before the call fails closed.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The server's name: a tool `t` is the action `<server>.<t>`.
    pub server: String,
    /// The agent id the calls are made as (the key decides who acts; this names the agent).
    pub agent_id: String,
    /// The session the calls are recorded under.
    pub session_id: String,
    /// A held call's client hears progress this often (when it asked for progress).
    pub progress_every: Duration,
}

/// Why a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The client closed its side: a normal end.
    ClientClosed,
    /// The server's output ended (it exited).
    ServerExited,
    /// The server wrote something that is not JSON-RPC.
    ServerInvalid(String),
}

/// A failure to start the server.
#[derive(Debug, thiserror::Error)]
#[error("starting the MCP server `{command}`: {source}")]
pub struct SpawnError {
    command: String,
    source: std::io::Error,
}

/// Runs `command` as the MCP server and relays between it and this process's stdin and
/// stdout until either side ends. The server's stderr is this process's.
pub async fn run_stdio(
    gateway: Client,
    config: ProxyConfig,
    command: OsString,
    args: Vec<OsString>,
) -> Result<(Ended, Option<std::process::ExitStatus>), SpawnError> {
    let mut child = tokio::process::Command::new(&command)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SpawnError {
            command: command.to_string_lossy().into_owned(),
            source,
        })?;
    let (server_in, server_out) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
    );
    let ended = relay(
        tokio::io::stdin(),
        tokio::io::stdout(),
        server_in,
        server_out,
        gateway,
        config,
    )
    .await;
    // The server's stdin is closed: it should exit by itself; if not, it is killed.
    let status = match tokio::time::timeout(WIND_DOWN, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    };
    Ok((ended, status))
}

/// What the tasks of one relay share.
struct Session {
    gateway: Client,
    config: ProxyConfig,
    to_client: mpsc::Sender<String>,
    to_server: mpsc::Sender<String>,
    state: Mutex<State>,
    /// Cancelled when the relay ends: held calls stop waiting.
    over: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct State {
    /// The client's name and version, from `initialize`.
    client: Option<(String, String)>,
    /// Tool annotations from the server's `tools/list` answers.
    annotations: HashMap<String, Value>,
    /// `tools/list` requests the server has not answered.
    tool_lists: HashSet<IdKey>,
    /// Requests forwarded to the server and not answered, with the decision of a forwarded
    /// `tools/call`.
    outstanding: HashMap<IdKey, Option<Forwarded>>,
    /// `tools/call`s being decided or held, each with what cancels it.
    held: HashMap<IdKey, CancellationToken>,
}

/// A tool call sent on to the server.
struct Forwarded {
    event_id: String,
    started: Instant,
}

/// Relays between a client (`client_in`, `client_out`) and a server (`server_in`,
/// `server_out`) until either side ends, governing every `tools/call` through `gateway`.
/// Requests still unanswered when the server ends are answered with an error; calls still
/// held are withdrawn.
pub async fn relay(
    client_in: impl AsyncRead + Unpin,
    client_out: impl AsyncWrite + Unpin + Send + 'static,
    server_in: impl AsyncWrite + Unpin + Send + 'static,
    server_out: impl AsyncRead + Unpin,
    gateway: Client,
    config: ProxyConfig,
) -> Ended {
    let (to_client, client_rx) = mpsc::channel(QUEUED);
    let (to_server, server_rx) = mpsc::channel(QUEUED);
    let client_writer = tokio::spawn(write_lines(client_out, client_rx));
    let server_writer = tokio::spawn(write_lines(server_in, server_rx));
    let session = Arc::new(Session {
        gateway,
        config,
        to_client,
        to_server,
        state: Mutex::default(),
        over: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    let codec = || LinesCodec::new_with_max_length(MAX_LINE_BYTES);
    let mut client_lines = FramedRead::new(client_in, codec());
    let mut server_lines = FramedRead::new(server_out, codec());
    let ended = loop {
        tokio::select! {
            line = client_lines.next() => match line {
                None => break Ended::ClientClosed,
                Some(Ok(line)) => session.from_client(line).await,
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    session.answer(message::jsonrpc_error(None, ErrorCode::INVALID_REQUEST,
                        format!("message over {MAX_LINE_BYTES} bytes"))).await;
                }
                Some(Err(LinesCodecError::Io(e))) => {
                    tracing::warn!(error = %e, "reading the client");
                    break Ended::ClientClosed;
                }
            },
            line = server_lines.next() => match line {
                None => break Ended::ServerExited,
                Some(Ok(line)) => {
                    if let Err(why) = session.from_server(line).await {
                        break Ended::ServerInvalid(why);
                    }
                }
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    break Ended::ServerInvalid(format!("a message over {MAX_LINE_BYTES} bytes"));
                }
                Some(Err(LinesCodecError::Io(e))) => break Ended::ServerInvalid(e.to_string()),
            },
        }
    };
    session.end(&ended).await;
    // The writers end when the last sender goes: the session's, and its tasks'. A task still
    // running past the wind-down keeps them open, so they are waited for only so long.
    drop(session);
    let _ = tokio::time::timeout(WIND_DOWN, server_writer).await;
    let _ = tokio::time::timeout(WIND_DOWN, client_writer).await;
    ended
}

/// Writes each line it is given, with a newline, flushing after each.
async fn write_lines(mut out: impl AsyncWrite + Unpin, mut lines: mpsc::Receiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.shutdown().await;
}

impl Session {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a line to the client.
    async fn answer(&self, line: String) {
        let _ = self.to_client.send(line).await;
    }

    /// Sends a line to the server.
    async fn forward(&self, line: String) {
        let _ = self.to_server.send(line).await;
    }

    async fn from_client(self: &Arc<Self>, line: String) {
        match message::from_client(&line) {
            FromClient::Call(call) => {
                let key = id_key(&call.id);
                let cancel = self.over.child_token();
                self.state().held.insert(key, cancel.clone());
                let session = self.clone();
                self.tasks
                    .spawn(async move { session.govern(call, line, cancel).await });
            }
            FromClient::BadCall(id, why) => {
                let id = id
                    .as_ref()
                    .and_then(|v| message::request_id(&v.to_string()));
                self.answer(message::jsonrpc_error(id, ErrorCode::INVALID_PARAMS, why))
                    .await;
            }
            FromClient::Cancelled(key) => {
                let held = self.state().held.remove(&key);
                match held {
                    // Never sent on: the server has nothing to cancel.
                    Some(cancel) => cancel.cancel(),
                    None => self.forward(line).await,
                }
            }
            FromClient::Initialize(key, client) => {
                {
                    let mut state = self.state();
                    state.client = client;
                    state.outstanding.insert(key, None);
                }
                self.forward(line).await;
            }
            FromClient::Request(key, method) => {
                {
                    let mut state = self.state();
                    if method == "tools/list" {
                        state.tool_lists.insert(key.clone());
                    }
                    state.outstanding.insert(key, None);
                }
                self.forward(line).await;
            }
            FromClient::Other => self.forward(line).await,
            FromClient::Refused(why) => {
                self.answer(message::jsonrpc_error(
                    None,
                    ErrorCode::INVALID_REQUEST,
                    why,
                ))
                .await;
            }
        }
    }

    async fn from_server(self: &Arc<Self>, line: String) -> Result<(), String> {
        match message::from_server(&line) {
            FromServer::Response(key, value) => {
                let forwarded = {
                    let mut state = self.state();
                    if state.tool_lists.remove(&key) {
                        for (name, annotations) in message::annotations(&value) {
                            if state.annotations.len() < MAX_TOOLS
                                || state.annotations.contains_key(&name)
                            {
                                state.annotations.insert(name, annotations);
                            }
                        }
                    }
                    state.outstanding.remove(&key).flatten()
                };
                if let Some(call) = forwarded {
                    self.report(call, message::is_error(&value), line.len());
                }
                self.answer(line).await;
            }
            FromServer::Batch(keys) => {
                {
                    let mut state = self.state();
                    for key in keys {
                        state.outstanding.remove(&key);
                    }
                }
                self.answer(line).await;
            }
            FromServer::Other => self.answer(line).await,
            FromServer::Invalid(why) => return Err(why),
        }
        Ok(())
    }

    /// Records how a forwarded call went (in the background; a failure is logged).
    fn report(self: &Arc<Self>, call: Forwarded, is_error: bool, bytes: usize) {
        let body = CompletionBody {
            is_error,
            result_bytes: bytes as u64,
            duration_ms: call.started.elapsed().as_millis() as u64,
        };
        let session = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = session.gateway.complete(&call.event_id, &body).await {
                tracing::warn!(event_id = %call.event_id, error = %e, "reporting a completion");
            }
        });
    }

    /// Asks the gateway about a `tools/call`, then forwards it, answers it or holds it.
    async fn govern(self: Arc<Self>, call: ToolCall, line: String, cancel: CancellationToken) {
        let key = id_key(&call.id);
        let body = self.execute_body(&call);
        let answer = match body {
            Ok(body) => tokio::time::timeout(GATEWAY_TIMEOUT, self.gateway.execute(&body, Some(0)))
                .await
                .unwrap_or_else(|_| Err(timed_out())),
            Err(e) => {
                self.answer(message::error_result(call.id.clone(), e)).await;
                self.state().held.remove(&key);
                return;
            }
        };
        match answer {
            Err(e) => {
                let text = format!(
                    "Writ could not decide this call, so it was not sent to the server: {e}"
                );
                self.answer(message::error_result(call.id.clone(), text))
                    .await;
            }
            // Cancelled while it was being decided: the client no longer waits for it.
            Ok(r) if cancel.is_cancelled() && r.decision != Verdict::Escalate => {}
            Ok(r) => match r.decision {
                Verdict::Allow => self.send_on(&call, line, r.event_id).await,
                Verdict::Block => {
                    self.answer(message::error_result(call.id.clone(), blocked(&r)))
                        .await;
                }
                Verdict::Escalate => self.hold(&call, line, &r, &cancel).await,
            },
        }
        self.state().held.remove(&key);
    }

    /// The execute request for a tool call: action `<server>.<tool>`, the arguments, and the
    /// MCP context (the server's annotations passed on as the untrusted hints they are).
    fn execute_body(&self, call: &ToolCall) -> Result<ExecuteBody, String> {
        let (client, annotations) = {
            let state = self.state();
            (
                call.client.clone().or_else(|| state.client.clone()),
                state
                    .annotations
                    .get(&call.name)
                    .cloned()
                    .unwrap_or(Value::Null),
            )
        };
        let context = message::context(
            &self.config.server,
            &call.name,
            client.as_ref(),
            annotations,
            "stdio",
        );
        let raw = |v: Value| RawValue::from_string(v.to_string()).map_err(|e| e.to_string());
        Ok(ExecuteBody {
            session_id: self.config.session_id.clone(),
            agent_id: self.config.agent_id.clone(),
            action: format!("{}.{}", self.config.server, call.name),
            decision: None,
            parameters: raw(Value::Object(call.arguments.clone()))?,
            context: Some(raw(context)?),
        })
    }

    /// Sends an allowed call on to the server, as the client wrote it: from now on a
    /// cancellation of it is the server's to handle.
    async fn send_on(&self, call: &ToolCall, line: String, event_id: String) {
        {
            let mut state = self.state();
            let key = id_key(&call.id);
            state.held.remove(&key);
            state.outstanding.insert(
                key,
                Some(Forwarded {
                    event_id,
                    started: Instant::now(),
                }),
            );
        }
        self.forward(line).await;
    }

    /// Holds an escalated call until it is decided, expires, or the client cancels it.
    async fn hold(
        &self,
        call: &ToolCall,
        line: String,
        r: &ExecuteResponse,
        cancel: &CancellationToken,
    ) {
        let Some(esc) = r.escalation_id.clone() else {
            let text = "Writ escalated this call without an escalation id; it was not sent".into();
            self.answer(message::error_result(call.id.clone(), text))
                .await;
            return;
        };
        let mut step = 0.0;
        let mut progress = async |text: String| {
            if let Some(token) = &call.progress {
                step += 1.0;
                self.answer(message::progress(token.clone(), step, text))
                    .await;
            }
        };
        progress(message::held_text(&esc, &r.reason)).await;
        let wait_s = self.config.progress_every.as_secs().max(1);
        loop {
            let waited = tokio::select! {
                () = cancel.cancelled() => {
                    // Cancelled by the client, or the session ended: nobody waits for it now.
                    if let Err(e) = self.gateway.withdraw(&esc).await {
                        tracing::warn!(escalation = %esc, error = %e, "withdrawing a cancelled call");
                    }
                    return;
                }
                waited = tokio::time::timeout(
                    GATEWAY_TIMEOUT + Duration::from_secs(wait_s),
                    self.gateway.wait_escalation(&esc, Some(wait_s)),
                ) => waited.unwrap_or_else(|_| Err(timed_out())),
            };
            match waited {
                Ok(w) if w.status == "pending" => {
                    progress(message::still_held_text(&esc)).await;
                }
                Ok(w) if w.status == "approved" => {
                    self.send_on(call, line, w.result.event_id).await;
                    return;
                }
                Ok(w) => {
                    let text = message::not_run_text(
                        &esc,
                        &w.status,
                        w.result.actor_human_id.as_deref(),
                        &w.result.reason,
                        &w.result.codes,
                        &w.result.event_id,
                    );
                    self.answer(message::error_result(call.id.clone(), text))
                        .await;
                    return;
                }
                Err(e) => {
                    let text = format!(
                        "Writ could not be reached while this call was held (escalation {esc}), \
                         so it was not sent to the server: {e}"
                    );
                    self.answer(message::error_result(call.id.clone(), text))
                        .await;
                    let _ = self.gateway.withdraw(&esc).await;
                    return;
                }
            }
        }
    }

    /// Ends the session: held calls are cancelled (and withdrawn); when the server ended,
    /// every request it left unanswered is answered with an error.
    async fn end(&self, ended: &Ended) {
        self.over.cancel();
        if *ended != Ended::ClientClosed {
            let why = match ended {
                Ended::ServerInvalid(why) => {
                    format!("the MCP server wrote an invalid message ({why}); the session is over")
                }
                _ => "the MCP server exited; the session is over".to_owned(),
            };
            let (outstanding, held): (Vec<IdKey>, Vec<IdKey>) = {
                let state = self.state();
                (
                    state.outstanding.keys().cloned().collect(),
                    state.held.keys().cloned().collect(),
                )
            };
            for key in outstanding.into_iter().chain(held) {
                let id = message::request_id(&key);
                self.answer(message::jsonrpc_error(
                    id,
                    ErrorCode::INTERNAL_ERROR,
                    why.clone(),
                ))
                .await;
            }
        }
        self.tasks.close();
        let _ = tokio::time::timeout(WIND_DOWN, self.tasks.wait()).await;
    }
}

/// The error of a gateway that did not answer in time.
fn timed_out() -> writ_client::ClientError {
    writ_client::ClientError::Timeout(GATEWAY_TIMEOUT)
}

/// The key of a request id.
fn id_key(id: &RequestId) -> IdKey {
    match id {
        NumberOrString::Number(n) => n.to_string(),
        NumberOrString::String(s) => Value::String(s.to_string()).to_string(),
    }
}

/// The text a blocked call's client reads.
fn blocked(r: &ExecuteResponse) -> String {
    message::blocked_text(&r.reason, &r.codes, &r.event_id)
}
