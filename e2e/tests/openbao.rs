//! KV v2 and transit engines on a real, unsealed OpenBao.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ossature_e2e::{Check, Stack, eventually, install_crypto_provider, unique, with_cleanup};
use vaultrs::api::sys::requests::EnableEngineRequest;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::{kv2, sys, transit};

fn client(stack: &Stack) -> Result<VaultClient> {
    install_crypto_provider();
    let settings = VaultClientSettingsBuilder::default()
        .address(&stack.openbao.addr)
        .token(stack.openbao.token.clone())
        // Explicit so stray VAULT_* variables in the environment cannot leak in.
        .ca_certs(Vec::new())
        .verify(true)
        .timeout(Some(Duration::from_secs(30)))
        .build()?;
    Ok(VaultClient::new(settings)?)
}

async fn mount(
    client: &VaultClient,
    path: &str,
    engine: &str,
    version: Option<&str>,
) -> Result<()> {
    let mut opts = EnableEngineRequest::builder();
    if let Some(version) = version {
        opts.options(HashMap::from([("version".to_owned(), version.to_owned())]));
    }
    sys::mount::enable(client, path, engine, Some(&mut opts))
        .await
        .with_context(|| format!("mounting {engine} at {path}"))
}

/// Unmounts and proves the mount is no longer listed.
async fn unmount(client: &VaultClient, path: &str) -> Result<()> {
    sys::mount::disable(client, path)
        .await
        .with_context(|| format!("unmounting {path}"))?;
    let mounts = sys::mount::list(client).await?;
    if mounts.contains_key(&format!("{path}/")) {
        bail!("{path} is still mounted after disable");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_write_read_versions() -> Result<()> {
    let stack = Stack::get().await?;
    let client = client(stack)?;
    let path = unique("e2e-kv");
    mount(&client, &path, "kv", Some("2")).await?;
    let body = kv2_body(&client, &path).await;
    let cleanup = unmount(&client, &path).await;
    with_cleanup(body, cleanup)
}

async fn kv2_body(client: &VaultClient, mount: &str) -> Result<()> {
    let mounts = sys::mount::list(client).await?;
    let info = mounts
        .get(&format!("{mount}/"))
        .context("new mount not listed")?;
    assert_eq!(info.mount_type, "kv");

    let first = BTreeMap::from([("user".to_owned(), "alice".to_owned())]);
    let second = BTreeMap::from([
        ("user".to_owned(), "bob".to_owned()),
        ("role".to_owned(), "admin".to_owned()),
    ]);

    // A fresh KV v2 mount finishes its setup asynchronously; retry until it takes writes.
    let written = eventually(
        "the KV v2 mount to accept writes",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            Ok(match kv2::set(client, mount, "app/config", &first).await {
                Ok(meta) => Check::Done(meta),
                Err(e) => Check::Pending(e.to_string()),
            })
        },
    )
    .await?;
    assert_eq!(written.version, 1);
    let second_meta = kv2::set(client, mount, "app/config", &second).await?;
    assert_eq!(second_meta.version, 2);

    let latest: BTreeMap<String, String> = kv2::read(client, mount, "app/config").await?;
    assert_eq!(latest, second);
    let original: BTreeMap<String, String> =
        kv2::read_version(client, mount, "app/config", 1).await?;
    assert_eq!(original, first);

    let meta = kv2::read_metadata(client, mount, "app/config").await?;
    assert_eq!(meta.current_version, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_encrypt_decrypt() -> Result<()> {
    let stack = Stack::get().await?;
    let client = client(stack)?;
    let path = unique("e2e-transit");
    mount(&client, &path, "transit", None).await?;
    let body = transit_body(&client, &path).await;
    let cleanup = unmount(&client, &path).await;
    with_cleanup(body, cleanup)
}

async fn transit_body(client: &VaultClient, mount: &str) -> Result<()> {
    let key = "orders";
    transit::key::create(client, mount, key, None).await?;
    let info = transit::key::read(client, mount, key).await?;
    assert_eq!(info.name, key);
    assert!(info.supports_encryption && info.supports_decryption);

    let plaintext = b"ossature e2e: the quick brown fox";
    let encoded = B64.encode(plaintext);
    let sealed = transit::data::encrypt(client, mount, key, &encoded, None).await?;
    let ciphertext = sealed.ciphertext;
    assert_ne!(ciphertext, encoded);
    assert!(
        !ciphertext.contains(&encoded) && !ciphertext.contains("quick brown fox"),
        "ciphertext leaks the plaintext: {ciphertext}"
    );

    // Encryption is randomised: the same plaintext must not seal identically.
    let again = transit::data::encrypt(client, mount, key, &encoded, None).await?;
    assert_ne!(again.ciphertext, ciphertext);

    let opened = transit::data::decrypt(client, mount, key, &ciphertext, None).await?;
    assert_eq!(B64.decode(opened.plaintext)?, plaintext);
    Ok(())
}
