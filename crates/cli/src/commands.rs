//! What each command does, on top of hush-relay and hush-client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hush_client::{Client, KdfParams, Session, UpdatePolicy};
use hush_proto::{AccountId, Invite};
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::{AdminCommand, Cli, Command, ContactCommand, GroupCommand};
use crate::output::print_message;

pub fn run(cli: Cli) -> Result<()> {
    let home = cli.home;
    match cli.command {
        Command::Serve { data, listen } => serve(&data, &listen),
        Command::Admin { command } => admin(command),
        Command::Join { invite, name, update_every_messages, update_every, json } => {
            let policy =
                UpdatePolicy { after_messages: update_every_messages, after: parse_duration(&update_every)? };
            block_on(join(&profile_dir(home)?, &invite, name, policy, json))
        }
        Command::Whoami { json } => whoami(&profile_dir(home)?, json),
        Command::Contact { command } => contact(&profile_dir(home)?, command),
        Command::Send { to, text, ttl } => block_on(send(&profile_dir(home)?, &to, &text.join(" "), ttl)),
        Command::Recv { wait, json } => block_on(recv(&profile_dir(home)?, wait, json)),
        Command::History { to, json } => history(&profile_dir(home)?, &to, json),
        Command::Group { command } => block_on(group(&profile_dir(home)?, command)),
        Command::Chat { .. } => {
            bail!("the interactive client is not built yet; use `hush send` and `hush recv`")
        }
    }
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
}

fn profile_dir(home: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(home) = home {
        return Ok(home);
    }
    if let Some(home) = std::env::var_os("HUSH_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("hush"));
    }
    let user_home =
        std::env::var_os("HOME").context("cannot find a profile directory: set --home or HUSH_HOME")?;
    Ok(PathBuf::from(user_home).join(".local/share/hush"))
}

fn passphrase(confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(value) = std::env::var_os("HUSH_PASSPHRASE") {
        let value =
            Zeroizing::new(value.into_string().map_err(|_| anyhow::anyhow!("HUSH_PASSPHRASE is not UTF-8"))?);
        if value.is_empty() {
            bail!("HUSH_PASSPHRASE is empty");
        }
        return Ok(value);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Passphrase: ")
            .context("cannot ask for the passphrase (no terminal?); set HUSH_PASSPHRASE")?,
    );
    if first.is_empty() {
        bail!("the passphrase must not be empty");
    }
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ")?);
        if *first != *second {
            bail!("the passphrases differ");
        }
    }
    Ok(first)
}

fn open(dir: &Path) -> Result<Client> {
    if !hush_store::Store::exists(dir) {
        bail!("no profile in {} (run `hush join INVITE` first)", dir.display());
    }
    let passphrase = passphrase(false)?;
    Ok(Client::open(dir, passphrase.as_bytes())?)
}

fn parse_duration(text: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("'{text}' is not a duration (like 30s, 5m, 2h, 7d)"))
}

fn serve(data: &Path, listen: &str) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUSH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let ready = |ready: hush_relay::admin::Ready| {
            use std::io::Write;
            println!("hush relay listening on {} pin {}", ready.address, ready.pin);
            let _ = std::io::stdout().flush();
        };
        hush_relay::admin::serve(data, listen, ready, shutdown_signal()).await
    })?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn admin(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Invite { data, count, uses, expires, address } => {
            let invites = hush_relay::admin::create_invites(
                &data,
                count,
                uses,
                parse_duration(&expires)?,
                address.as_deref(),
            )?;
            for invite in invites {
                println!("{invite}");
            }
        }
        AdminCommand::Deactivate { account, data } => {
            let account: AccountId = account.parse().context("not an account id")?;
            if !hush_relay::admin::deactivate(&data, &account)? {
                bail!("no such account");
            }
            println!("deactivated {account}");
        }
        AdminCommand::Stats { data, json } => {
            let stats = hush_relay::admin::stats(&data)?;
            if json {
                println!(
                    "{}",
                    json!({
                        "accounts": stats.accounts,
                        "active_accounts": stats.active_accounts,
                        "queued_messages": stats.queued_messages,
                        "queued_bytes": stats.queued_bytes,
                    })
                );
            } else {
                println!("accounts:        {}", stats.accounts);
                println!("active accounts: {}", stats.active_accounts);
                println!("queued messages: {}", stats.queued_messages);
                println!("queued bytes:    {}", stats.queued_bytes);
            }
        }
    }
    Ok(())
}

async fn join(
    dir: &Path,
    invite: &str,
    name: Option<String>,
    policy: UpdatePolicy,
    json: bool,
) -> Result<()> {
    let invite: Invite = invite.parse()?;
    if hush_store::Store::exists(dir) {
        bail!("a profile already exists in {} (use another --home)", dir.display());
    }
    let passphrase = passphrase(true)?;
    let name = name.unwrap_or_else(|| "me".to_owned());
    let client = Client::create(dir, passphrase.as_bytes(), KdfParams::default(), &invite, &name)?;
    client.set_update_policy(policy)?;
    let registered = Session::register(&client, &invite.code).await;
    let session = match registered {
        Ok(session) => session,
        Err(error) => {
            drop(client);
            remove_profile(dir);
            return Err(error.into());
        }
    };
    session.close().await;
    if json {
        println!("{}", json!({ "account": client.account().to_string() }));
    } else {
        println!("{}", client.account());
    }
    Ok(())
}

/// Removes a profile that never got registered, so `join` can be retried.
fn remove_profile(dir: &Path) {
    for file in ["key", "hush.db", "hush.db-wal", "hush.db-shm"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
}

fn whoami(dir: &Path, json: bool) -> Result<()> {
    let client = open(dir)?;
    if json {
        println!("{}", json!({ "account": client.account().to_string(), "name": client.name()? }));
    } else {
        println!("{} {}", client.account(), client.name()?);
    }
    Ok(())
}

fn contact(dir: &Path, command: ContactCommand) -> Result<()> {
    let client = open(dir)?;
    match command {
        ContactCommand::Add { name, account } => {
            let account: AccountId = account.parse().context("not an account id")?;
            client.add_contact(&name, account)?;
        }
        ContactCommand::List { json } => {
            for (name, account) in client.contacts()? {
                if json {
                    println!("{}", json!({ "name": name, "account": account.to_string() }));
                } else {
                    println!("{name} {account}");
                }
            }
        }
    }
    Ok(())
}

async fn send(dir: &Path, to: &str, text: &str, ttl: Option<String>) -> Result<()> {
    let ttl_secs = match ttl {
        Some(ttl) => u32::try_from(parse_duration(&ttl)?.as_secs()).unwrap_or(u32::MAX).max(1),
        None => 0,
    };
    let client = open(dir)?;
    let mut session = Session::login(&client).await?;
    session.send_text(to, text, ttl_secs).await?;
    session.close().await;
    Ok(())
}

async fn recv(dir: &Path, wait: u64, json: bool) -> Result<()> {
    let client = open(dir)?;
    let mut session = Session::login(&client).await?;
    session.receive(Duration::from_secs(wait)).await?;
    session.close().await;
    for message in client.take_unshown()? {
        print_message(&message, json);
    }
    Ok(())
}

fn history(dir: &Path, to: &str, json: bool) -> Result<()> {
    let client = open(dir)?;
    for message in client.history(to)? {
        print_message(&message, json);
    }
    Ok(())
}

async fn group(dir: &Path, command: GroupCommand) -> Result<()> {
    let client = open(dir)?;
    let members = |names: &[String]| -> Result<Vec<AccountId>> {
        names.iter().map(|name| Ok(client.resolve_member(name)?)).collect()
    };
    match command {
        GroupCommand::List { json } => {
            for (name, record) in client.groups()? {
                let _ = record;
                if json {
                    println!("{}", json!({ "name": name }));
                } else {
                    println!("{name}");
                }
            }
            return Ok(());
        }
        GroupCommand::Create { name, members: names } => {
            let accounts = members(&names)?;
            let mut session = Session::login(&client).await?;
            session.group_create(&name, &accounts).await?;
            session.close().await;
        }
        GroupCommand::Add { name, members: names } => {
            let accounts = members(&names)?;
            let mut session = Session::login(&client).await?;
            session.group_add(&name, &accounts).await?;
            session.close().await;
        }
        GroupCommand::Remove { name, members: names } => {
            let accounts = members(&names)?;
            let mut session = Session::login(&client).await?;
            session.group_remove(&name, &accounts).await?;
            session.close().await;
        }
    }
    Ok(())
}
