//! Roles: what an input means, independent of any server's naming.

/// What an input means, independent of any server's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Counter of finished requests.
    Requests,
    /// Counter of failed requests (a subset of `Requests`).
    Errors,
    /// Histogram of request latency.
    Latency,
    /// Gauge of requests in flight.
    InFlight,
    /// Gauge of requests waiting for capacity.
    Queue,
    /// Gauge of requests being executed.
    Running,
    /// Gauge of KV-cache use, 0..1.
    KvCache,
    /// Counter of prompt (input) tokens.
    PromptTokens,
    /// Counter of generated (output) tokens.
    GenerationTokens,
    /// Histogram of time to first token.
    TimeToFirstToken,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Requests,
        Role::Errors,
        Role::Latency,
        Role::InFlight,
        Role::Queue,
        Role::Running,
        Role::KvCache,
        Role::PromptTokens,
        Role::GenerationTokens,
        Role::TimeToFirstToken,
    ];

    /// Name used in configuration files (`custom:` mappings).
    pub fn name(self) -> &'static str {
        match self {
            Role::Requests => "requests",
            Role::Errors => "errors",
            Role::Latency => "latency",
            Role::InFlight => "in_flight",
            Role::Queue => "queue",
            Role::Running => "running",
            Role::KvCache => "kv_cache",
            Role::PromptTokens => "prompt_tokens",
            Role::GenerationTokens => "generation_tokens",
            Role::TimeToFirstToken => "time_to_first_token",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The kind of series a role must be read from.
    pub fn kind(self) -> Kind {
        match self {
            Role::Requests | Role::Errors | Role::PromptTokens | Role::GenerationTokens => {
                Kind::Counter
            }
            Role::Latency | Role::TimeToFirstToken => Kind::Histogram,
            Role::InFlight | Role::Queue | Role::Running | Role::KvCache => Kind::Gauge,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }
}
