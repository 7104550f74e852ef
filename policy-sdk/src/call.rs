//! The tool call a policy evaluates, and a builder for native tests.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use core::cell::OnceCell;
use core::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Window;

/// The downstream HTTP request a tool call resolves to, from the tenant's tool catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The downstream service, e.g. `github`.
    pub service: String,
    /// HTTP method, upper case.
    pub method: String,
    /// The fully resolved URL.
    pub url: String,
    /// Marked destructive in the tenant's tool catalog (e.g. a POST that moves money).
    pub destructive: bool,
}

/// Why an argument, the arguments or the context could not be read as the asked type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// The arguments are not a JSON object.
    NotAnObject,
    /// The named argument is absent.
    Missing(String),
    /// The value does not deserialize as the asked type.
    Invalid {
        /// The argument's name, or `""` for the whole arguments or context.
        name: String,
        /// What serde said.
        message: String,
    },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnObject => f.write_str("arguments are not a JSON object"),
            Self::Missing(name) => write!(f, "argument `{name}` is missing"),
            Self::Invalid { name, message } if name.is_empty() => f.write_str(message),
            Self::Invalid { name, message } => write!(f, "argument `{name}`: {message}"),
        }
    }
}

impl core::error::Error for ArgError {}

/// Where [`ToolCall::usage`] reads counters from.
#[derive(Debug, Clone)]
enum UsageSource {
    /// The gateway, through the `writ:policy/host` import.
    #[cfg(target_arch = "wasm32")]
    Host,
    /// Values set by a test; unset counters read 0.
    Fixed(BTreeMap<(String, Window), f64>),
}

/// A tool call that an agent asks to perform.
#[derive(Debug, Clone)]
pub struct ToolCall {
    action: String,
    arguments: String,
    context: String,
    agent_id: String,
    /// Set by native tests; a component asks the host.
    key_id: String,
    session_id: String,
    tenant_id: String,
    target: Option<Target>,
    timestamp_ms: u64,
    parsed_arguments: OnceCell<Result<Map<String, Value>, ArgError>>,
    usage: UsageSource,
}

impl ToolCall {
    /// Starts building a call for `action`, for native tests.
    ///
    /// Arguments and context default to `{}`, identities to `"test-…"`, and the timestamp to 0.
    pub fn builder(action: impl Into<String>) -> ToolCallBuilder {
        ToolCallBuilder {
            call: ToolCall {
                action: action.into(),
                arguments: "{}".into(),
                context: "{}".into(),
                agent_id: "test-agent".into(),
                key_id: "key_test".into(),
                session_id: "test-session".into(),
                tenant_id: "test-tenant".into(),
                target: None,
                timestamp_ms: 0,
                parsed_arguments: OnceCell::new(),
                usage: UsageSource::Fixed(BTreeMap::new()),
            },
        }
    }

    #[cfg(target_arch = "wasm32")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_host(
        action: String,
        arguments: String,
        context: String,
        agent_id: String,
        session_id: String,
        tenant_id: String,
        target: Option<Target>,
        timestamp_ms: u64,
    ) -> Self {
        Self {
            action,
            arguments,
            context,
            agent_id,
            key_id: String::new(),
            session_id,
            tenant_id,
            target,
            timestamp_ms,
            parsed_arguments: OnceCell::new(),
            usage: UsageSource::Host,
        }
    }

    /// The logical action, e.g. `payments.initiate`.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The arguments as JSON text (an object).
    pub fn arguments_json(&self) -> &str {
        &self.arguments
    }

    /// The whole arguments, deserialized as `T`.
    pub fn arguments<T: DeserializeOwned>(&self) -> Result<T, ArgError> {
        serde_json::from_str(&self.arguments).map_err(|e| ArgError::Invalid {
            name: String::new(),
            message: e.to_string(),
        })
    }

    /// One argument by name, deserialized as `T`.
    ///
    /// A JSON `null` counts as present: ask for an `Option<T>` to accept it.
    pub fn arg<T: DeserializeOwned>(&self, name: &str) -> Result<T, ArgError> {
        let map = self
            .parsed_arguments
            .get_or_init(|| match serde_json::from_str::<Value>(&self.arguments) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(ArgError::NotAnObject),
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let value = map
            .get(name)
            .ok_or_else(|| ArgError::Missing(name.to_owned()))?;
        T::deserialize(value).map_err(|e| ArgError::Invalid {
            name: name.to_owned(),
            message: e.to_string(),
        })
    }

    /// The caller-supplied context as JSON text (an object, `{}` when none).
    pub fn context_json(&self) -> &str {
        &self.context
    }

    /// The caller-supplied context, deserialized as `T`.
    pub fn context<T: DeserializeOwned>(&self) -> Result<T, ArgError> {
        serde_json::from_str(&self.context).map_err(|e| ArgError::Invalid {
            name: String::new(),
            message: e.to_string(),
        })
    }

    /// The agent making the call, as its request names it: checked by the gateway when the
    /// agent's key is bound to an agent id, otherwise the caller's word. Key per-caller limits by
    /// [`ToolCall::key_id`].
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The id of the API key that made the call (`key_…`), as the gateway authenticated it. The
    /// caller cannot choose it: count per-caller usage under a counter named after it.
    pub fn key_id(&self) -> String {
        match &self.usage {
            #[cfg(target_arch = "wasm32")]
            UsageSource::Host => crate::__private::key_id(),
            UsageSource::Fixed(_) => self.key_id.clone(),
        }
    }

    /// The session the call belongs to, as the agent names it: an agent starts a new session
    /// at will, so a cap counted per session can be dodged that way. Count caps a caller must
    /// not escape per [`ToolCall::key_id`] (or a bound agent id).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The tenant whose policy this is.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The downstream HTTP request, when the tenant's tool catalog knows the call.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// Milliseconds since the Unix epoch, stamped by the gateway.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// Sum of the charges recorded against `counter` in the current `window`, for this tenant
    /// (for [`Window::Session`], for this call's session). A counter never charged reads 0.
    pub fn usage(&self, counter: &str, window: Window) -> f64 {
        match &self.usage {
            #[cfg(target_arch = "wasm32")]
            UsageSource::Host => crate::__private::usage(counter, window),
            UsageSource::Fixed(values) => values
                .get(&(counter.to_owned(), window))
                .copied()
                .unwrap_or(0.0),
        }
    }
}

/// Builds a [`ToolCall`] for a native test. Start with [`ToolCall::builder`].
#[derive(Debug, Clone)]
pub struct ToolCallBuilder {
    call: ToolCall,
}

impl ToolCallBuilder {
    /// Sets the arguments (normally a JSON object).
    pub fn arguments(mut self, arguments: Value) -> Self {
        self.call.arguments = arguments.to_string();
        self.call.parsed_arguments = OnceCell::new();
        self
    }

    /// Sets the arguments as raw JSON text, to test malformed input.
    pub fn arguments_json(mut self, arguments: impl Into<String>) -> Self {
        self.call.arguments = arguments.into();
        self.call.parsed_arguments = OnceCell::new();
        self
    }

    /// Sets the context (normally a JSON object).
    pub fn context(mut self, context: Value) -> Self {
        self.call.context = context.to_string();
        self
    }

    /// Sets the agent id.
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.call.agent_id = agent_id.into();
        self
    }

    /// Sets the id of the key that makes the call (default `key_test`).
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.call.key_id = key_id.into();
        self
    }

    /// Sets the session id.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.call.session_id = session_id.into();
        self
    }

    /// Sets the tenant id.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.call.tenant_id = tenant_id.into();
        self
    }

    /// Sets the downstream target.
    pub fn target(mut self, target: Target) -> Self {
        self.call.target = Some(target);
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(mut self, timestamp_ms: u64) -> Self {
        self.call.timestamp_ms = timestamp_ms;
        self
    }

    /// Sets what [`ToolCall::usage`] answers for `counter` in `window`.
    pub fn usage(mut self, counter: impl Into<String>, window: Window, value: f64) -> Self {
        #[allow(irrefutable_let_patterns)]
        if let UsageSource::Fixed(values) = &mut self.call.usage {
            values.insert((counter.into(), window), value);
        }
        self
    }

    /// Finishes the call.
    pub fn build(self) -> ToolCall {
        self.call
    }
}
