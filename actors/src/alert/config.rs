//! `[alert]` and the errors of alert operations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sink::{AlertmanagerConfig, DeliveryConfig, TelegramConfig, WebhookConfig};

use super::*;

/// `[alert]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// A repeat of an open alert raised less than this long ago only bumps its count.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Records kept in memory for status and in the store's `alerts` state key (open alerts are
    /// kept besides, however old).
    pub max_recent: usize,
    /// `[alert.delivery]`: queue, timeout, retries and backoff of every external sink.
    pub delivery: DeliveryConfig,
    /// `[alert.alertmanager]`.
    pub alertmanager: AlertmanagerConfig,
    /// `[alert.webhook]`.
    pub webhook: WebhookConfig,
    /// `[alert.telegram]`.
    pub telegram: TelegramConfig,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(5 * 60),
            max_recent: 200,
            delivery: DeliveryConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            webhook: WebhookConfig::default(),
            telegram: TelegramConfig::default(),
        }
    }
}

impl AlertConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_recent == 0 {
            return Err("max_recent must be at least 1".into());
        }
        if self.max_recent > 10_000 {
            return Err("max_recent must be at most 10000 (the store keeps the history)".into());
        }
        self.delivery
            .validate()
            .map_err(|e| format!("delivery.{e}"))?;
        let url = |enabled: bool, field: &str, url: &str| -> Result<(), String> {
            if enabled {
                transport::Endpoint::parse(url).map_err(|e| format!("{field} {e}"))?;
            }
            Ok(())
        };
        let am = &self.alertmanager;
        url(am.enabled, "alertmanager.url", &am.url)?;
        // Alertmanager resolves an alert `resolve_timeout` (5 min by default) after its last
        // send; re-sending less often would make open alerts flap.
        if am.resend_interval.is_zero() || am.resend_interval > Duration::from_secs(5 * 60) {
            return Err("alertmanager.resend_interval must be between 0 and 5m".into());
        }
        url(self.webhook.enabled, "webhook.url", &self.webhook.url)?;
        let tg = &self.telegram;
        url(tg.enabled, "telegram.base_url", &tg.base_url)?;
        if tg.enabled && tg.chat_id.trim().is_empty() {
            return Err("telegram.chat_id must be set when telegram is enabled".into());
        }
        if tg.enabled && tg.token_env.trim().is_empty() {
            return Err(
                "telegram.token_env must name the environment variable with the bot token".into(),
            );
        }
        Ok(())
    }
}
