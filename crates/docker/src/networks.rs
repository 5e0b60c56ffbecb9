//! The network half of [`Engine`]: looking networks up and creating the
//! isolated bridge network that job containers join.

use bollard::models::NetworkCreateRequest;

use super::*;

/// The bridge driver's option that lets containers of one network reach
/// each other; podder's job network turns it off.
const ICC: &str = "com.docker.network.bridge.enable_icc";

impl Engine {
    /// Whether a network of that name (or id) exists.
    pub async fn network_exists(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            // Several of that name: it exists (see ensure_isolated_network).
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 400, message })
                if message.contains("ambiguous") =>
            {
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The ids of the networks named exactly `name` (engines before API
    /// 1.44 allow several), smallest first.
    pub async fn networks_named(&self, name: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("name", vec![name])]);
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default().filters(&filters).build();
        let mut ids: Vec<String> = (self.docker.list_networks(Some(opts)).await?.into_iter())
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Creates the bridge network `name` with inter-container traffic
    /// disabled (containers on it reach the outside through NAT, not each
    /// other) and `labels`; returns its id. Engines before API 1.44 make a
    /// second network of a name that exists: callers check first (see
    /// [`networks_named`](Self::networks_named)), under a lock of their own.
    pub async fn create_isolated_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<String> {
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(ICC.to_string(), "false".to_string())])),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        let r = self.docker.create_network(req).await?;
        if !r.warning.is_empty() {
            tracing::warn!(network = name, "Docker: {}", r.warning);
        }
        Ok(r.id)
    }

    /// Whether containers on network `name` may reach each other (the
    /// bridge driver's `enable_icc`, true unless set to false).
    pub async fn network_icc(&self, name: &str) -> Result<bool> {
        let n = self.docker.inspect_network(name, None).await?;
        Ok(n.options.and_then(|o| o.get(ICC).cloned()).is_none_or(|v| v != "false"))
    }
}
