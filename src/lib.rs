//! The TradeBaas daemon shell: CLI, configuration, HTTP, shutdown, logging and the paper exchange.

pub mod admin;
pub mod admin_cmd;
pub mod check_cmd;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod http;
pub mod logging;
pub mod paper_cmd;
pub mod paper_exchange;
pub mod state_cmd;
pub mod status;
pub mod status_page;
