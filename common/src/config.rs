//! Command-line/environment settings shared by the producer and the worker. Each flag can
//! also come from the `SNAPQ_*` variable named beside it; values are validated once, here.

use std::time::Duration;

use crate::amqp::TopologyConfig;
use crate::glance::{GlanceConfig, LocationApi};
use crate::rbd::CephConfig;

/// Where RabbitMQ is and which names snapq uses on it.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// Broker URL, e.g. amqp://user:password@host:5672/%2f (the password is never logged).
    #[arg(id = "amqp-url", long = "amqp-url", env = "SNAPQ_AMQP_URL")]
    pub url: String,
    /// oslo.messaging control_exchange the requests are published to.
    #[arg(long, env = "SNAPQ_EXCHANGE", default_value = "openstack")]
    pub exchange: String,
    /// Declare the request exchange durable (must match oslo's amqp_durable_queues).
    #[arg(long, env = "SNAPQ_EXCHANGE_DURABLE", default_value_t = false)]
    pub exchange_durable: bool,
    /// oslo topic snapq serves (routing key and work queue name).
    #[arg(long, env = "SNAPQ_TOPIC", default_value = "snapq")]
    pub topic: String,
    /// Deliveries of one request before RabbitMQ dead-letters it.
    #[arg(long, env = "SNAPQ_DELIVERY_LIMIT", default_value_t = 5)]
    pub delivery_limit: u32,
}

impl AmqpArgs {
    pub fn topology(&self) -> TopologyConfig {
        TopologyConfig {
            exchange: self.exchange.clone(),
            exchange_durable: self.exchange_durable,
            topic: self.topic.clone(),
            delivery_limit: self.delivery_limit,
        }
    }
}

/// Glance's endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct GlanceArgs {
    /// Glance API root, e.g. http://glance.internal:9292
    #[arg(id = "glance-url", long = "glance-url", env = "SNAPQ_GLANCE_URL")]
    pub url: String,
    /// Keystone token sent as X-Auth-Token (never logged).
    #[arg(
        long = "glance-token",
        env = "SNAPQ_GLANCE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Which location API to use: auto, new (POST .../locations, API 2.17+) or legacy (PATCH).
    #[arg(long = "glance-location-api", env = "SNAPQ_GLANCE_LOCATION_API", default_value = "auto", value_parser = parse_location_api)]
    pub location_api: LocationApi,
    /// Seconds one Glance request may take.
    #[arg(
        long = "glance-timeout",
        env = "SNAPQ_GLANCE_TIMEOUT",
        default_value_t = 60
    )]
    pub timeout_secs: u64,
}

fn parse_location_api(s: &str) -> Result<LocationApi, String> {
    match s {
        "auto" => Ok(LocationApi::Auto),
        "new" => Ok(LocationApi::New),
        "legacy" => Ok(LocationApi::Legacy),
        other => Err(format!("expected auto, new or legacy, got '{other}'")),
    }
}

impl GlanceArgs {
    pub fn config(&self) -> GlanceConfig {
        GlanceConfig {
            url: self.url.clone(),
            token: self.token.clone(),
            request_timeout: Duration::from_secs(self.timeout_secs),
            location_api: self.location_api,
        }
    }
}

/// How to reach Ceph.
#[derive(Debug, Clone, clap::Args)]
pub struct CephArgs {
    /// ceph.conf naming the monitors and the keyring.
    #[arg(
        long = "ceph-conf",
        env = "SNAPQ_CEPH_CONF",
        default_value = "/etc/ceph/ceph.conf"
    )]
    pub conf: String,
    /// Ceph user id without `client.` (Nova's user: rbd on the disk and image pools).
    #[arg(long = "ceph-user", env = "SNAPQ_CEPH_USER", default_value = "nova")]
    pub user: String,
    /// Pool Glance's rbd store uses.
    #[arg(
        long = "glance-pool",
        env = "SNAPQ_GLANCE_POOL",
        default_value = "images"
    )]
    pub glance_pool: String,
    /// Seconds to wait for the cluster connection.
    #[arg(
        long = "ceph-connect-timeout",
        env = "SNAPQ_CEPH_CONNECT_TIMEOUT",
        default_value_t = 30
    )]
    pub connect_timeout_secs: u64,
}

impl CephArgs {
    pub fn config(&self) -> CephConfig {
        CephConfig {
            conf_path: self.conf.clone(),
            user: self.user.clone(),
        }
    }
}
