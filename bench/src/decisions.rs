//! `ossature-bench decisions`: the control plane's authorization decisions,
//! in process, with no stack. Builds tenants with scope trees of realistic
//! depth and a given number of role bindings across them, loads them into
//! an `Authorizer` (data load time), then times many decisions of callers
//! of those tenants (some on another tenant, some platform operators), on
//! one thread and then on several at once: p50/p99/max per decision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ossature_policy::{
    Authorizer, Caller, CallerKind, Grant, GroupMapping, Policy, Request, ResourceActions, Role,
    ScopeNode, TenantData, catalog::RESOURCES,
};

use super::line;

#[derive(clap::Args, Debug)]
pub struct DecisionArgs {
    /// Role bindings (a subject given a role in a scope) across all tenants.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    bindings: u32,
    /// Tenants the bindings are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    tenants: u32,
    /// Levels of each tenant's scope tree ("Global" > region > country > site > team is 5).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=12))]
    depth: u32,
    /// Children of each scope above the last level.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    fanout: u32,
    /// Decisions timed on each run (one thread, then all threads).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    decisions: u32,
    /// Threads deciding at once in the second run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Seed of the generated tenants and requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A small deterministic generator (splitmix64): the same seed gives the
/// same tenants and requests.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const GROUPS_PER_TENANT: usize = 20;
const SERVICE_ACCOUNTS_PER_TENANT: usize = 10;
const MAPPINGS_PER_TENANT: usize = 5;
const ROLES: &[&str] = &[
    "Viewer", "Viewer", "Viewer", "Editor", "Editor", "Admin", "deployer", "auditor",
];

/// One tenant's tree: `s0` at the top, children `s<parent>-<i>`.
fn scope_tree(depth: u32, fanout: u32) -> Vec<ScopeNode> {
    let mut scopes = vec![ScopeNode {
        name: "s0".to_string(),
        parent: None,
    }];
    let mut level = vec!["s0".to_string()];
    for _ in 1..depth {
        let mut next = Vec::new();
        for parent in &level {
            for i in 0..fanout {
                let name = format!("{parent}-{i}");
                scopes.push(ScopeNode {
                    name: name.clone(),
                    parent: Some(parent.clone()),
                });
                next.push(name);
            }
        }
        level = next;
    }
    scopes
}

fn own_roles() -> (Vec<Policy>, Vec<Role>) {
    let policies = vec![Policy {
        name: "deploy".into(),
        description: "roll out workloads".into(),
        permissions: vec![ResourceActions {
            resource: "workload".into(),
            actions: vec!["update".into()],
        }],
    }];
    let roles = vec![
        Role {
            name: "deployer".into(),
            description: String::new(),
            policies: vec!["workload-reader".into(), "deploy".into()],
        },
        Role {
            name: "auditor".into(),
            description: String::new(),
            policies: vec!["audit-reader".into(), "tenant-reader".into()],
        },
    ];
    (policies, roles)
}

/// A tenant with `bindings` role bindings: grants of one to four subjects
/// (users, groups, service accounts) in scopes across the tree, a few at
/// the root, and identity-provider group mappings.
fn tenant(dice: &mut Dice, scopes: &[ScopeNode], bindings: usize) -> (TenantData, usize) {
    let users = (bindings / 2).max(1);
    let (policies, roles) = own_roles();
    let mut data = TenantData {
        scopes: scopes.to_vec(),
        policies,
        roles,
        ..Default::default()
    };
    let mappings = MAPPINGS_PER_TENANT.min(bindings / 10);
    for i in 0..mappings {
        data.group_mappings.push(GroupMapping {
            name: Some(format!("idp-{i}")),
            group: format!("idp-g{i}"),
            role: dice.pick(ROLES).to_string(),
            scope: Some(dice.pick(scopes).name.clone()),
        });
    }
    let mut left = bindings - mappings;
    while left > 0 {
        let mut grant = Grant {
            role: dice.pick(ROLES).to_string(),
            scope: (!dice.chance(2)).then(|| dice.pick(scopes).name.clone()),
            ..Default::default()
        };
        for _ in 0..(1 + dice.below(4)).min(left) {
            match dice.below(10) {
                0..=6 => grant.users.push(format!("u{}", dice.below(users))),
                7..=8 => grant
                    .groups
                    .push(format!("g{}", dice.below(GROUPS_PER_TENANT))),
                _ => grant
                    .service_accounts
                    .push(format!("sa{}", dice.below(SERVICE_ACCOUNTS_PER_TENANT))),
            }
            left -= 1;
        }
        data.grants.push(grant);
    }
    (data, users)
}

/// A request of a caller of one of `fleet`'s tenants. Seven in ten come
/// from a subject of one of the tenant's grants, in the grant's scope or
/// below it, as a front end that hides what is not permitted makes them;
/// the rest are anyone's anywhere. 5% ask about another tenant; 1% come from
/// a platform operator.
fn request(dice: &mut Dice, fleet: &[Tenant], scopes: &[ScopeNode]) -> Request {
    let tenant = dice.pick(fleet);
    let mut kind = CallerKind::User;
    let mut subject = format!("u{}", dice.below(tenant.users));
    let mut groups: Vec<String> = (0..dice.below(3))
        .map(|_| format!("g{}", dice.below(GROUPS_PER_TENANT)))
        .collect();
    let mut scope = dice.pick(scopes).name.clone();
    if dice.chance(70) && !tenant.data.grants.is_empty() {
        let grant = dice.pick(&tenant.data.grants);
        if let Some(user) = grant.users.first() {
            subject = user.clone();
        } else if let Some(group) = grant.groups.first() {
            groups.push(group.clone());
        } else if let Some(account) = grant.service_accounts.first() {
            kind = CallerKind::ServiceAccount;
            subject = account.clone();
        }
        let below: Vec<&ScopeNode> = match &grant.scope {
            Some(granted) => scopes
                .iter()
                .filter(|s| s.name == *granted || s.name.starts_with(&format!("{granted}-")))
                .collect(),
            None => scopes.iter().collect(),
        };
        scope = dice.pick(&below).name.clone();
    } else if dice.chance(10) {
        kind = CallerKind::ServiceAccount;
        subject = format!("sa{}", dice.below(SERVICE_ACCOUNTS_PER_TENANT));
    }
    if dice.chance(10) {
        groups.push(format!("idp-g{}", dice.below(MAPPINGS_PER_TENANT)));
    }
    let asked = if dice.chance(5) {
        dice.pick(fleet).name.clone()
    } else {
        tenant.name.clone()
    };
    let resource = dice.pick(RESOURCES);
    Request {
        caller: Caller {
            subject,
            kind,
            tenant: Some(tenant.name.clone()),
            groups,
            platform_operator: dice.chance(1),
        },
        resource: resource.name.to_string(),
        action: dice.pick(resource.actions).name.to_string(),
        tenant: Some(asked),
        scope: (!dice.chance(5)).then_some(scope),
    }
}

struct Tenant {
    name: String,
    data: TenantData,
    users: usize,
}

fn micros(d: Duration) -> String {
    format!("{:.1}µs", d.as_secs_f64() * 1e6)
}

fn percentiles(times: &mut [Duration]) -> String {
    times.sort_unstable();
    format!(
        "p50 {}  p99 {}  max {}",
        micros(super::percentile(times, 0.50)),
        micros(super::percentile(times, 0.99)),
        micros(times.last().copied().unwrap_or_default())
    )
}

/// Time spent by this thread on the CPU: on a shared machine, what a
/// decision costs apart from waiting for a core.
fn cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

#[derive(Default)]
struct Timings {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    allowed: usize,
}

impl Timings {
    fn extend(&mut self, other: Timings) {
        self.wall.extend(other.wall);
        self.cpu.extend(other.cpu);
        self.allowed += other.allowed;
    }

    fn print(&mut self) {
        line("  wall per decision", percentiles(&mut self.wall));
        line("  cpu per decision", percentiles(&mut self.cpu));
    }
}

/// Times each of `requests` decided in turn.
fn time_decisions(authorizer: &Authorizer, requests: &[Request]) -> Timings {
    let mut timings = Timings {
        wall: Vec::with_capacity(requests.len()),
        cpu: Vec::with_capacity(requests.len()),
        allowed: 0,
    };
    for request in requests {
        let (wall, cpu) = (Instant::now(), cpu_time());
        let decision = authorizer.decide(request);
        timings.cpu.push(cpu_time().saturating_sub(cpu));
        timings.wall.push(wall.elapsed());
        timings.allowed += usize::from(decision.allowed);
    }
    timings
}

/// The machine's load average over the last minute, from /proc.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn run(args: DecisionArgs) -> Result<()> {
    let tenant_count = args.tenants as usize;
    let bindings = args.bindings as usize;
    if bindings < tenant_count {
        bail!(
            "--bindings {bindings} is fewer than --tenants {tenant_count}: give each tenant at least one"
        );
    }
    let mut dice = Dice(args.seed);
    let scopes = scope_tree(args.depth, args.fanout);
    let fleet: Vec<Tenant> = (0..tenant_count)
        .map(|t| {
            let share = bindings / tenant_count + usize::from(t < bindings % tenant_count);
            let (data, users) = tenant(&mut dice, &scopes, share);
            Tenant {
                name: format!("tenant-{t}"),
                data,
                users,
            }
        })
        .collect();
    line(
        "decisions",
        format!(
            "{bindings} bindings over {tenant_count} tenants, {} scopes each ({} levels, fanout {})",
            scopes.len(),
            args.depth,
            args.fanout
        ),
    );

    let authorizer = Arc::new(Authorizer::new().context("the authorizer did not start")?);
    let mut loads = Vec::with_capacity(tenant_count);
    let mut loaded_bindings = 0;
    let started = Instant::now();
    for Tenant { name, data, .. } in &fleet {
        let start = Instant::now();
        let loaded = authorizer.set_tenant(name, data.clone())?;
        loads.push(start.elapsed());
        if !loaded.problems.is_empty() {
            bail!("generated data of {name} is invalid:\n{}", loaded.problems);
        }
        loaded_bindings += loaded.bindings;
    }
    let load_all = started.elapsed();
    line(
        "data load",
        format!(
            "{loaded_bindings} bindings in {:.1}ms; per tenant {}",
            load_all.as_secs_f64() * 1e3,
            percentiles(&mut loads)
        ),
    );

    let requests: Vec<Request> = (0..args.decisions)
        .map(|_| request(&mut dice, &fleet, &scopes))
        .collect();
    // Warm up: first decisions page the program and documents in.
    time_decisions(&authorizer, &requests[..requests.len().min(1000)]);

    line(
        "load average",
        format!("{} on {} cores", load_average(), cores()),
    );
    let started = Instant::now();
    let mut single = time_decisions(&authorizer, &requests);
    let elapsed = started.elapsed();
    line(
        "one thread",
        format!(
            "{} decisions ({:.0}% allowed) in {:.2}s: {:.0}/s",
            requests.len(),
            single.allowed as f64 * 100.0 / requests.len() as f64,
            elapsed.as_secs_f64(),
            requests.len() as f64 / elapsed.as_secs_f64()
        ),
    );
    single.print();

    let threads = args.threads as usize;
    let requests = Arc::new(requests);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let authorizer = Arc::clone(&authorizer);
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || {
                let share: Vec<Request> =
                    requests.iter().skip(i).step_by(threads).cloned().collect();
                time_decisions(&authorizer, &share)
            })
        })
        .collect();
    let mut parallel = Timings::default();
    for handle in handles {
        parallel.extend(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a deciding thread panicked"))?,
        );
    }
    let elapsed = started.elapsed();
    line(
        format!("{threads} threads at once").as_str(),
        format!(
            "{} decisions in {:.2}s: {:.0}/s",
            requests.len(),
            elapsed.as_secs_f64(),
            requests.len() as f64 / elapsed.as_secs_f64()
        ),
    );
    parallel.print();

    let sample: BTreeMap<bool, String> = requests
        .iter()
        .take(200)
        .map(|r| {
            let d = authorizer.decide(r);
            (d.allowed, d.reason)
        })
        .collect();
    for reason in sample.values() {
        line("  a reason", reason);
    }
    let goal = Duration::from_millis(1);
    let p99 = super::percentile(&single.wall, 0.99).max(super::percentile(&parallel.wall, 0.99));
    line(
        "goal wall p99 <= 1ms",
        format!(
            "{} (worst wall p99 {})",
            if p99 <= goal { "met" } else { "NOT met" },
            micros(p99)
        ),
    );
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
