//! The TradeBaas daemon shell: CLI, configuration, HTTP, shutdown, logging and the paper exchange.

pub mod paper_exchange;
