//! The `weir` client commands over the server's HTTP API, one module per
//! resource as in `server/`: topics, records (produce and consume),
//! groups, modules, pipelines, tenants and their tokens.
//!
//! This module owns the connection: [`Client`] sends a request and hands
//! back the server's [`Answer`], or the server's reason as the error (one
//! line, non-zero exit). Commands read answers into types (the server's
//! own where it has them, small ones beside each command otherwise), so an
//! answer of another shape is an error naming the request, never a panic
//! or a silent zero. `--json` prints the answer as the server sent it,
//! untouched by those types; tables are for people.

mod cluster;
mod groups;
mod modules;
mod pipelines;
mod records;
mod table;
mod tenants;
mod topics;

use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::Agent;

pub use cluster::ClusterCommand;
pub use groups::GroupCommand;
pub use modules::ModuleCommand;
pub use pipelines::PipelineCommand;
pub use records::{ConsumeArgs, ProduceArgs};
pub use tenants::{TenantCommand, TokenCommand};
pub use topics::TopicCommand;

/// The most of an answer read.
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// A connection to a Weir server.
pub struct Client {
    base: String,
    agent: Agent,
    token: Option<String>,
    /// Print answers as JSON (`--json`) instead of tables.
    json: bool,
}

/// A request's method: the few the API uses.
#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        })
    }
}

/// What a request sends.
enum Body<'a> {
    None,
    Json(&'a Value),
    /// A module's `.wasm` component.
    Wasm(&'a [u8]),
}

/// A successful answer, as the server sent it.
struct Answer {
    /// The request it answers (`GET /v1/topics`), to name in errors.
    request: String,
    json: Value,
}

/// Every error's answer: `{"error": "..."}`.
#[derive(Deserialize)]
struct Refusal {
    error: String,
}

impl Answer {
    /// The answer read as `T`, or an error naming the request.
    fn read<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        serde_json::from_value(self.json)
            .map_err(|e| anyhow::anyhow!("the server's answer to {}: {e}", self.request))
    }
}

impl Client {
    pub fn new(server: &str, token: Option<String>, json: bool) -> Client {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Client {
            base: server.trim_end_matches('/').to_string(),
            agent,
            token,
            json,
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::Get, path, Body::None)
    }

    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call(Method::Post, path, Body::Json(body))
    }

    /// POSTs without a body (an action such as `pause`).
    fn post_empty(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::Post, path, Body::None)
    }

    fn put(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call(Method::Put, path, Body::Json(body))
    }

    fn put_wasm(&self, path: &str, module: &[u8]) -> anyhow::Result<Answer> {
        self.call(Method::Put, path, Body::Wasm(module))
    }

    fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::Delete, path, Body::None)
    }

    /// Sends a request: its answer, or the server's reason as the error.
    fn call(&self, method: Method, path: &str, body: Body<'_>) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let auth = auth.as_deref().unwrap_or("");
        let result = match (method, body) {
            (Method::Get, _) => self.agent.get(&url).header("authorization", auth).call(),
            (Method::Delete, _) => self.agent.delete(&url).header("authorization", auth).call(),
            (Method::Post, Body::Json(v)) => self
                .agent
                .post(&url)
                .header("authorization", auth)
                .send_json(v),
            (Method::Post, _) => self
                .agent
                .post(&url)
                .header("authorization", auth)
                .send_empty(),
            (Method::Put, Body::Json(v)) => self
                .agent
                .put(&url)
                .header("authorization", auth)
                .send_json(v),
            (Method::Put, Body::Wasm(b)) => self
                .agent
                .put(&url)
                .header("authorization", auth)
                .header("content-type", "application/wasm")
                .send(b),
            (Method::Put, Body::None) => self
                .agent
                .put(&url)
                .header("authorization", auth)
                .send_empty(),
        };
        let mut response =
            result.with_context(|| format!("cannot reach the Weir server at {}", self.base))?;
        let status = response.status();
        let request = format!("{method} {path}");
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .with_context(|| format!("while reading the answer to {request}"))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(Answer { request, json });
        }
        match Refusal::deserialize(&json) {
            Ok(refusal) => anyhow::bail!("{}", refusal.error),
            Err(_) => anyhow::bail!("{request} failed with {status}: {json}"),
        }
    }

    /// Prints an answer: with `--json` as the server sent it, otherwise
    /// read as `T` and rendered for people.
    fn show<T: DeserializeOwned>(
        &self,
        answer: Answer,
        render: impl FnOnce(T),
    ) -> anyhow::Result<()> {
        if self.json {
            print_json(&answer.json);
            return Ok(());
        }
        render(answer.read()?);
        Ok(())
    }

    /// Says what a change did, read from its answer as `T` (with
    /// `--json`, the answer itself).
    fn confirm<T: DeserializeOwned>(
        &self,
        answer: Answer,
        say: impl FnOnce(T) -> String,
    ) -> anyhow::Result<()> {
        self.show(answer, |done| println!("{}", say(done)))
    }
}

/// `{"deleted": name}`: what deleting a topic, group, pipeline or tenant
/// answers.
#[derive(Deserialize)]
struct Deleted {
    deleted: String,
}

/// One JSON value, pretty-printed.
fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON prints")
    );
}

/// A name as one segment of a request path.
fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_another_shape_is_an_error_naming_the_request() {
        let answer = Answer {
            request: "GET /v1/topics/t".into(),
            json: serde_json::json!({ "name": 1 }),
        };
        let error = answer.read::<weir_log::TopicInfo>().err().unwrap();
        assert_eq!(
            error.to_string(),
            "the server's answer to GET /v1/topics/t: invalid type: integer `1`, expected a string"
        );
    }
}
