//! The daemon's TOML configuration: one struct per table, `deny_unknown_fields` everywhere, a
//! default for every value (so `Config::default()` is exactly `config/default.toml`), and errors
//! that name the file and the key. Environment variables and CLI flags override the file.
//!
//! Two values are not plain defaults, because what is safe depends on the exchange: the initial
//! trading mode (`[fail_safe] initial_mode`) and the hosted strategies (`[[strategies]]`). Left
//! out of the file they stay `None`, and [`Config::resolve`] decides them, after the environment
//! and the command line are applied, with the reason: on the embedded paper exchange
//! (`broker.url = "paper"`) AGGRESSIVE with the built-in `example` strategy; on any other exchange
//! OBSERVE_ONLY with no strategy. What the file states explicitly is always used as stated.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tradebaas_actors::alert::AlertConfig;
use tradebaas_actors::broker::{BrokerConfig, Credentials};
use tradebaas_actors::checks::ChecksConfig;
use tradebaas_actors::failsafe::{FailSafeConfig, InitialMode};
use tradebaas_actors::health::HealthConfig;
use tradebaas_actors::heartbeat::HeartbeatConfig;
use tradebaas_actors::mode::TradingMode;
use tradebaas_actors::persister::StoreConfig;
use tradebaas_actors::recovery::RecoveryConfig;
use tradebaas_actors::strategy::StrategyEntry;
use tradebaas_actors::strategy::exec::ExecutionConfig;
use tradebaas_actors::supervisor::policy::SupervisorConfig;
use tradebaas_actors::tree::TreeConfig;

use crate::admin::AdminConfig;
use crate::paper_exchange::PaperConfig;

/// The whole configuration file. Its `Default` is every table's default, with the initial mode
/// and the strategies unset (= `config/default.toml`; [`Config::resolve`] decides them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub logging: LoggingConfig,
    pub supervisor: SupervisorConfig,
    pub health: HealthConfig,
    pub broker: BrokerConfig,
    pub paper_exchange: PaperConfig,
    pub alert: AlertConfig,
    pub fail_safe: FailSafeConfig,
    pub heartbeat: HeartbeatConfig,
    /// Start-up state restore and exchange reconciliation.
    pub recovery: RecoveryConfig,
    pub store: StoreConfig,
    /// Start-up checks and periodic data integrity.
    pub checks: ChecksConfig,
    /// Order placement, risk guards, protection checks.
    pub execution: ExecutionConfig,
    /// The local admin socket for operator commands.
    pub admin: AdminConfig,
    /// `[[strategies]]`: one hosted instance each, as the file names them. `None` (no
    /// `[[strategies]]` and no `strategies = []`): [`Config::resolve`] decides by the exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategies: Option<Vec<StrategyEntry>>,
}

/// The built-in `example` strategy: a moving-average crossover on BTC-PERPETUAL with tight
/// distances, so that a first run on the embedded paper exchange opens and closes a paper
/// position within a minute. Hosted only by default on the embedded paper exchange.
pub fn example_strategy() -> StrategyEntry {
    StrategyEntry {
        ma_cross: tradebaas_actors::strategy::signal::MaCrossConfig {
            stop_distance_pct: 0.1,
            take_profit_pct: 0.1,
            ..Default::default()
        },
        id: "example".into(),
        instrument: "BTC-PERPETUAL".into(),
    }
}

/// Which exchange the daemon trades on, for the safety defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `broker.url = "paper"`: the daemon starts its own paper exchange (paper money).
    EmbeddedPaper,
    /// Any `ws://` / `wss://` URL: treated as a real exchange, whatever answers there (a
    /// standalone `tradebaas paper-exchange` included).
    External,
}

impl Exchange {
    /// The exchange `[broker]` (after overrides) names.
    pub fn of(broker: &BrokerConfig) -> Exchange {
        if broker.is_embedded_paper() {
            Exchange::EmbeddedPaper
        } else {
            Exchange::External
        }
    }
}

/// The values a configuration may leave to the daemon, decided, each with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub exchange: Exchange,
    /// The fail-safe's mode for a first start (a stored mode still takes precedence).
    pub initial_mode: InitialMode,
    /// The strategies the daemon hosts.
    pub strategies: Vec<StrategyEntry>,
    /// Why these strategies.
    pub strategies_reason: String,
}

impl Resolved {
    /// The hosted strategies for a log line or a report: `none`, or `id (instrument), …`.
    pub fn strategies_text(&self) -> String {
        if self.strategies.is_empty() {
            "none".into()
        } else {
            self.strategies
                .iter()
                .map(|s| format!("{} ({})", s.id, s.instrument))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// The safety defaults (pure). What the file states explicitly wins; what it leaves out is
/// decided by the exchange: trading paper money by default is what a first run is for, trading
/// real money by default is never right.
pub fn resolve(
    exchange: Exchange,
    initial_mode: Option<TradingMode>,
    strategies: Option<&[StrategyEntry]>,
) -> Resolved {
    let initial_mode = match (initial_mode, exchange) {
        (Some(mode), _) => InitialMode::explicit(mode),
        (None, Exchange::EmbeddedPaper) => InitialMode {
            mode: TradingMode::Aggressive,
            reason: "broker is the embedded paper exchange (paper money) and [fail_safe] \
                     initial_mode is not set"
                .into(),
        },
        (None, Exchange::External) => InitialMode::observe_only(
            "broker is not the embedded paper exchange and [fail_safe] initial_mode is not set",
        ),
    };
    let (strategies, strategies_reason) = match (strategies, exchange) {
        (Some([]), _) => (
            Vec::new(),
            "the configuration sets strategies = [] (none)".to_owned(),
        ),
        (Some(named), _) => (
            named.to_vec(),
            "named by [[strategies]] in the configuration".to_owned(),
        ),
        (None, Exchange::EmbeddedPaper) => (
            vec![example_strategy()],
            "the built-in example: broker is the embedded paper exchange and the configuration \
             names no [[strategies]]"
                .to_owned(),
        ),
        (None, Exchange::External) => (
            Vec::new(),
            "broker is not the embedded paper exchange and the configuration names no \
             [[strategies]]"
                .to_owned(),
        ),
    };
    Resolved {
        exchange,
        initial_mode,
        strategies,
        strategies_reason,
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The HTTP listen address (health, readiness, liveness, metrics).
    pub listen: SocketAddr,
    /// Where the durable store lives.
    pub data_dir: PathBuf,
    /// Hard limit for the whole graceful shutdown; past it the process exits non-zero.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long startup (actors up, broker connected) may take before `run` gives up waiting
    /// for readiness in its log line; the daemon keeps running and reports why in `/ready`.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir: PathBuf::from("./data"),
            shutdown_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `text` (human-readable) or `json` (one JSON object per line); `--log-format` overrides.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,tradebaas_actors=debug`; `RUST_LOG` overrides.
    pub filter: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file, or the environment variable, the value came from.
    pub source: String,
    /// The dotted key (`broker.reconnect.backoff.jitter`), when one is known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{key}`: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Overrides from the environment and the command line, applied in that order over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub broker_url: Option<String>,
}

impl Config {
    /// Parses TOML text; `source` names the file in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            source: with_line(source, text, e.span()),
            key: None,
            message: e.message().to_owned(),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError {
                source: with_line(source, text, inner.span()),
                key: (key != "." && !key.is_empty()).then_some(key),
                message: inner.message().to_owned(),
            }
        })?;
        config.validate(source)?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            key: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, &source)
    }

    /// Checks values serde cannot: every error names the key.
    pub fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let fail = |section: &str, e: String| {
            let (key, message) = split_key(section, &e);
            ConfigError {
                source: source.to_owned(),
                key: Some(key),
                message,
            }
        };
        self.supervisor
            .validate()
            .map_err(|e| fail("supervisor", e))?;
        self.health.validate().map_err(|e| fail("health", e))?;
        self.broker.validate().map_err(|e| fail("broker", e))?;
        self.paper_exchange
            .validate()
            .map_err(|e| fail("paper_exchange", e))?;
        self.recovery.validate().map_err(|e| fail("recovery", e))?;
        self.store.validate().map_err(|e| fail("store", e))?;
        self.checks.validate().map_err(|e| fail("checks", e))?;
        self.execution
            .validate()
            .map_err(|e| fail("execution", e))?;
        self.alert.validate().map_err(|e| fail("alert", e))?;
        self.heartbeat
            .validate()
            .map_err(|e| fail("heartbeat", e))?;
        self.admin.validate().map_err(|e| fail("admin", e))?;
        if self.server.shutdown_timeout.is_zero() {
            return Err(fail(
                "server",
                "shutdown_timeout must be greater than 0".into(),
            ));
        }
        let strategies = self.strategies.as_deref().unwrap_or_default();
        for (i, s) in strategies.iter().enumerate() {
            if s.id.trim().is_empty() {
                return Err(fail(
                    &format!("strategies[{i}]"),
                    "id must not be empty".into(),
                ));
            }
            if strategies[..i].iter().any(|o| o.id == s.id) {
                return Err(fail(
                    &format!("strategies[{i}]"),
                    format!("id {:?} is used twice", s.id),
                ));
            }
            // Every label this strategy can ever produce must be valid and fit Deribit's 64 chars.
            tradebaas_actors::orders::labels::intent_label(
                &self.recovery.label_prefix,
                &s.id,
                u64::MAX,
            )
            .map_err(|e| fail(&format!("strategies[{i}]"), format!("id: {e}")))?;
            s.ma_cross
                .validate()
                .map_err(|e| fail(&format!("strategies[{i}].ma_cross"), e))?;
            if s.instrument.trim().is_empty() {
                return Err(fail(
                    &format!("strategies[{i}]"),
                    "instrument must not be empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// The initial mode and the strategies as this configuration (with its overrides applied)
    /// decides them; see [`resolve`].
    pub fn resolve(&self) -> Resolved {
        resolve(
            Exchange::of(&self.broker),
            self.fail_safe.initial_mode,
            self.strategies.as_deref(),
        )
    }

    /// What [`Config::resolve`] decided, as `#` comment lines for `tradebaas check-config`: the
    /// exchange, the initial mode and the strategies with their reasons, and whether the
    /// `paper/*` control methods are served.
    pub fn resolution_text(&self) -> String {
        let r = self.resolve();
        let exchange = match r.exchange {
            Exchange::EmbeddedPaper => "the embedded paper exchange (paper money)".to_owned(),
            Exchange::External => format!(
                "{} (not the embedded paper exchange: treated as a real exchange)",
                tradebaas_actors::broker::protocol::redact_url(&self.broker.url)
            ),
        };
        let control = match (r.exchange, self.paper_exchange.allow_control) {
            (Exchange::EmbeddedPaper, true) => {
                "served by the embedded paper exchange on its loopback port \
                 ([paper_exchange] allow_control = true)"
            }
            (Exchange::EmbeddedPaper, false) => "off ([paper_exchange] allow_control = false)",
            (Exchange::External, _) => {
                "off: no paper exchange runs and the daemon sends no paper/* request \
                 (broker is not the embedded paper exchange; [paper_exchange] is unused)"
            }
        };
        format!(
            "# exchange: {exchange}\n\
             # initial mode {}: {} (a mode stored by a previous run takes precedence)\n\
             # strategies: {}: {}\n\
             # paper/* control methods: {control}\n",
            r.initial_mode.mode,
            r.initial_mode.reason,
            r.strategies_text(),
            r.strategies_reason,
        )
    }

    /// What the supervision tree is built from, for the store in `data_dir` and the resolved
    /// exchange (`paper` already replaced by the embedded exchange's URL).
    pub fn tree_config(
        &self,
        data_dir: &Path,
        broker_url: String,
        credentials: Option<Credentials>,
    ) -> TreeConfig {
        let resolved = self.resolve();
        TreeConfig {
            supervisor: self.supervisor.clone(),
            alert: self.alert.clone(),
            store_path: crate::state_cmd::store_path(data_dir),
            backups_dir: crate::state_cmd::backups_dir(data_dir),
            store: self.store.clone(),
            fail_safe: self.fail_safe.clone(),
            initial_mode: resolved.initial_mode,
            health: self.health.clone(),
            heartbeat: self.heartbeat.clone(),
            notifier: None,
            broker: self.broker.clone(),
            broker_url,
            credentials,
            strategies: resolved.strategies,
            execution: self.execution.clone(),
            label_prefix: self.recovery.label_prefix.clone(),
        }
    }

    /// Applies `TRADEBAAS_LISTEN`, `TRADEBAAS_DATA_DIR` and `TRADEBAAS_BROKER_URL` from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut o = Overrides::default();
        if let Some(v) = env("TRADEBAAS_LISTEN") {
            o.listen = Some(v.parse().map_err(|e| ConfigError {
                source: "environment variable TRADEBAAS_LISTEN".into(),
                key: Some("server.listen".into()),
                message: format!("{v:?} is not a socket address like 127.0.0.1:3000: {e}"),
            })?);
        }
        o.data_dir = env("TRADEBAAS_DATA_DIR").map(PathBuf::from);
        o.broker_url = env("TRADEBAAS_BROKER_URL");
        self.apply(o, "environment variable TRADEBAAS_BROKER_URL")
    }

    /// Applies overrides; `source` names where a bad broker URL came from.
    pub fn apply(&mut self, o: Overrides, source: &str) -> Result<(), ConfigError> {
        if let Some(listen) = o.listen {
            self.server.listen = listen;
        }
        if let Some(dir) = o.data_dir {
            self.server.data_dir = dir;
        }
        if let Some(url) = o.broker_url {
            self.broker.url = url;
            self.broker.validate().map_err(|e| {
                let (key, message) = split_key("broker", &e);
                ConfigError {
                    source: source.to_owned(),
                    key: Some(key),
                    message,
                }
            })?;
        }
        Ok(())
    }
}

/// Validation messages start with the field name (`reconnect.backoff.jitter must be …`): turn
/// that into a full key and the rest of the message.
fn split_key(section: &str, message: &str) -> (String, String) {
    let field: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']'))
        .collect();
    if field.is_empty() {
        (section.to_owned(), message.to_owned())
    } else {
        let field = field.trim_end_matches(':');
        (
            format!("{section}.{field}"),
            message[field.len()..]
                .trim_start_matches(':')
                .trim()
                .to_owned(),
        )
    }
}

/// `file:line` for an error span.
fn with_line(source: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text
                .get(..span.start.min(text.len()))
                .map(|t| t.matches('\n').count() + 1)
                .unwrap_or(1);
            format!("{source}:{line}")
        }
        None => source.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../config/default.toml");

    fn err(text: &str) -> ConfigError {
        Config::parse(text, "test.toml").unwrap_err()
    }

    #[test]
    fn default_toml_is_the_built_in_default() {
        let parsed = Config::parse(DEFAULT, "config/default.toml").unwrap();
        assert_eq!(parsed, Config::default());
    }

    /// The commented-out `[[strategies]]` block of default.toml is the built-in `example`.
    #[test]
    fn default_toml_documents_the_built_in_example() {
        let start = DEFAULT
            .find("# [[strategies]]")
            .expect("default.toml shows the example");
        let block: String = DEFAULT[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = Config::parse(&block, "default.toml example").unwrap();
        assert_eq!(parsed.strategies, Some(vec![example_strategy()]));
    }

    #[test]
    fn resolve_on_the_embedded_paper_exchange_trades_the_example_by_default() {
        let r = resolve(Exchange::EmbeddedPaper, None, None);
        assert_eq!(r.initial_mode.mode, TradingMode::Aggressive);
        assert!(
            r.initial_mode.reason.contains("embedded paper exchange"),
            "{r:?}"
        );
        assert!(r.initial_mode.reason.contains("not set"), "{r:?}");
        assert_eq!(r.strategies, vec![example_strategy()]);
        assert!(r.strategies_reason.contains("built-in example"), "{r:?}");
    }

    #[test]
    fn resolve_elsewhere_observes_and_hosts_nothing_by_default() {
        let r = resolve(Exchange::External, None, None);
        assert_eq!(r.initial_mode.mode, TradingMode::ObserveOnly);
        assert_eq!(
            r.initial_mode.reason,
            "broker is not the embedded paper exchange and [fail_safe] initial_mode is not set"
        );
        assert!(r.strategies.is_empty(), "{r:?}");
        assert_eq!(r.strategies_text(), "none");
        assert!(
            r.strategies_reason.contains("names no [[strategies]]"),
            "{r:?}"
        );
    }

    #[test]
    fn resolve_uses_what_the_file_states_on_any_exchange() {
        let named = vec![StrategyEntry {
            id: "btc-main".into(),
            ..example_strategy()
        }];
        for exchange in [Exchange::EmbeddedPaper, Exchange::External] {
            for mode in [TradingMode::Aggressive, TradingMode::ObserveOnly] {
                let r = resolve(exchange, Some(mode), Some(&named));
                assert_eq!(r.initial_mode, InitialMode::explicit(mode), "{exchange:?}");
                assert_eq!(r.strategies, named, "{exchange:?}");
                assert!(r.strategies_reason.contains("named by"), "{r:?}");
            }
            // An explicit empty list is none, on paper too.
            let r = resolve(exchange, None, Some(&[]));
            assert!(r.strategies.is_empty(), "{exchange:?}");
            assert!(r.strategies_reason.contains("strategies = []"), "{r:?}");
        }
    }

    #[test]
    fn a_minimal_real_exchange_file_observes_and_hosts_nothing() {
        let c = Config::parse(
            "[broker]\nurl = \"wss://www.deribit.com/ws/api/v2\"\n",
            "test.toml",
        )
        .unwrap();
        let r = c.resolve();
        assert_eq!(r.exchange, Exchange::External);
        assert_eq!(r.initial_mode.mode, TradingMode::ObserveOnly);
        assert!(r.strategies.is_empty(), "{r:?}");
        let tree = c.tree_config(Path::new("/tmp/x"), c.broker.url.clone(), None);
        assert_eq!(tree.initial_mode.mode, TradingMode::ObserveOnly);
        assert!(tree.strategies.is_empty());
    }

    #[test]
    fn the_default_config_with_a_broker_url_override_observes_and_hosts_nothing() {
        for mut c in [
            Config::default(),
            Config::parse(DEFAULT, "config/default.toml").unwrap(),
        ] {
            assert_eq!(c.resolve().initial_mode.mode, TradingMode::Aggressive);
            c.apply_env(|k| {
                (k == "TRADEBAAS_BROKER_URL").then(|| "wss://test.deribit.com/ws/api/v2".into())
            })
            .unwrap();
            let r = c.resolve();
            assert_eq!(r.initial_mode.mode, TradingMode::ObserveOnly, "{r:?}");
            assert!(r.strategies.is_empty(), "{r:?}");
        }
    }

    #[test]
    fn an_explicit_mode_and_strategies_are_honoured_on_a_real_exchange() {
        let c = Config::parse(
            "[broker]\nurl = \"wss://www.deribit.com/ws/api/v2\"\n\n\
             [fail_safe]\ninitial_mode = \"AGGRESSIVE\"\n\n\
             [[strategies]]\nid = \"btc-main\"\ninstrument = \"BTC-PERPETUAL\"\n",
            "test.toml",
        )
        .unwrap();
        let r = c.resolve();
        assert_eq!(r.initial_mode.mode, TradingMode::Aggressive);
        assert!(r.initial_mode.reason.contains("is set"), "{r:?}");
        assert_eq!(r.strategies_text(), "btc-main (BTC-PERPETUAL)");
    }

    #[test]
    fn shipped_real_exchange_configs_start_observe_only_with_named_strategies() {
        for (name, text) in [
            ("testnet", include_str!("../config/testnet.toml")),
            (
                "production.example",
                include_str!("../config/production.example.toml"),
            ),
        ] {
            let r = Config::parse(text, name).unwrap().resolve();
            assert_eq!(r.exchange, Exchange::External, "{name}");
            assert_eq!(r.initial_mode.mode, TradingMode::ObserveOnly, "{name}");
            assert!(!r.strategies.is_empty(), "{name}: {r:?}");
        }
    }

    #[test]
    fn shipped_configs_parse() {
        for (name, text) in [
            ("testnet", include_str!("../config/testnet.toml")),
            (
                "production.example",
                include_str!("../config/production.example.toml"),
            ),
        ] {
            Config::parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn a_typo_names_the_key_and_the_file() {
        let e = err("[broker]\nheartbeat_intervall = \"10s\"\n");
        let text = e.to_string();
        assert!(text.starts_with("test.toml:2"), "{text}");
        assert!(text.contains("heartbeat_intervall"), "{text}");
    }

    #[test]
    fn a_bad_value_names_the_full_key() {
        let e = err("[supervisor.children.strategy]\nmax_restarts = -1\n");
        assert_eq!(
            e.key.as_deref(),
            Some("supervisor.children.strategy.max_restarts"),
            "{e}"
        );
        let e = err("[broker.reconnect.backoff]\ninitial = \"soon\"\n");
        assert_eq!(
            e.key.as_deref(),
            Some("broker.reconnect.backoff.initial"),
            "{e}"
        );
    }

    #[test]
    fn validation_errors_name_the_key() {
        let e = err("[checks]\ncapital_tolerance = 2.0\n");
        assert_eq!(e.key.as_deref(), Some("checks.capital_tolerance"), "{e}");
        let e = err("[broker]\nurl = \"http://example\"\n");
        assert_eq!(e.key.as_deref(), Some("broker.url"), "{e}");
        let e = err("[supervisor.children.alert]\nwithin = \"0s\"\n");
        assert_eq!(
            e.key.as_deref(),
            Some("supervisor.children.alert.within"),
            "{e}"
        );
        let e = err("[heartbeat]\nunanswered_rounds = 0\n");
        assert_eq!(e.key.as_deref(), Some("heartbeat.unanswered_rounds"), "{e}");
        let e = err("[heartbeat]\nevent_interval = \"1ms\"\n");
        assert_eq!(e.key.as_deref(), Some("heartbeat.event_interval"), "{e}");
    }

    #[test]
    fn alert_sink_errors_name_the_key() {
        let e = err("[alert.webhook]\nenabled = true\nurl = \"ftp://x\"\n");
        assert_eq!(e.key.as_deref(), Some("alert.webhook.url"), "{e}");
        let e = err("[alert.telegram]\nenabled = true\n");
        assert_eq!(e.key.as_deref(), Some("alert.telegram.chat_id"), "{e}");
        let e = err("[alert.delivery]\nqueue_capacity = 0\n");
        assert_eq!(
            e.key.as_deref(),
            Some("alert.delivery.queue_capacity"),
            "{e}"
        );
        let e = err("[alert.alertmanager]\nenabeld = true\n");
        assert!(e.to_string().contains("enabeld"), "{e}");
    }

    #[test]
    fn admin_errors_name_the_key() {
        let e = err("[admin]\nallowed_uids = [1000, 1000]\n");
        assert_eq!(e.key.as_deref(), Some("admin.allowed_uids[1]"), "{e}");
        let e = err("[admin]\nallowed_uids = [-1]\n");
        assert!(e.to_string().contains("allowed_uids"), "{e}");
        let e = err("[admin]\nsocket = \"/tmp/x\"\n");
        assert!(e.to_string().contains("socket"), "{e}");
    }

    #[test]
    fn an_unknown_child_name_is_refused() {
        let e = err("[supervisor.children.stratgy]\nmax_restarts = 1\n");
        assert!(e.to_string().contains("stratgy"), "{e}");
    }

    #[test]
    fn a_missing_required_value_is_named() {
        let e = err("[[strategies]]\nid = \"a\"\n");
        assert!(e.to_string().contains("instrument"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "TRADEBAAS_LISTEN" => Some("127.0.0.1:4000".into()),
            "TRADEBAAS_DATA_DIR" => Some("/tmp/x".into()),
            "TRADEBAAS_BROKER_URL" => Some("ws://127.0.0.1:9/ws/api/v2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.server.listen.port(), 4000);
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.broker.url, "ws://127.0.0.1:9/ws/api/v2");
        let e = c
            .apply_env(|k| (k == "TRADEBAAS_LISTEN").then(|| "nope".into()))
            .unwrap_err();
        assert!(e.to_string().contains("TRADEBAAS_LISTEN"), "{e}");
    }
}
