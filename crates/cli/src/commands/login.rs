//! `podder login`: checks a server and token, then saves them.

use anyhow::Result;
use podder_client::Client;

use crate::config::ClientConfig;

pub async fn run(server: &str, token: &str) -> Result<i32> {
    let who = Client::new(server, token)?.whoami().await?;
    let path = ClientConfig { server: Some(server.to_string()), token: Some(token.to_string()) }.save()?;
    println!("logged in to {server} as {}; config saved to {}", who.owner, path.display());
    Ok(0)
}
