//! Pieces shared by the snapq producer, worker and tests: the request message in
//! oslo.messaging's envelope, the AMQP topology, the safe librbd layer, the Glance client and
//! configuration.

// Only the librbd/librados bindings (`rbd::ffi`) may use `unsafe`; they allow it for
// themselves.
#![deny(unsafe_code)]

pub mod amqp;
pub mod cloud;
pub mod conffile;
pub mod config;
pub mod glance;
pub mod job;
pub mod keystone;
pub mod logging;
pub mod message;
pub mod rbd;
pub mod tls;
