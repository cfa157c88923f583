//! Weir: a Kubernetes-native pipeline operator.
//!
//! `api` holds the custom resources, `engine` the pure logic (no I/O, no clock), and
//! `controller` the Kubernetes side that drives the engine.

pub mod api;
pub mod artifacts;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod graph;
pub mod http;
pub mod http_trigger;
pub mod leader;
pub mod local;
pub mod manifest;
pub mod metrics;
pub mod shard;
pub mod telemetry;
pub mod ui;
pub mod webhook;
