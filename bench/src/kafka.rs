//! `kiln bench --kafka`: Kiln over a real broker, each figure beside its floor in the same run.
//!
//! (a) the raw pipe (an rdkafka consumer that decodes each submission and produces a result in
//!     transactions with its offsets, running nothing) against Kiln with no-op pods;
//! (b) `print(1)` produced to the submissions topic and its result read back, against the bare
//!     `python3 -c` spawn, sequentially and at the host's parallelism;
//! (c) a `kiln scheduler`'s memory while a backlog of a million submissions waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::config::Settings;
use kiln::languages::Registry;
use kiln::metrics::Metrics;
use kiln::pods::PodBackend;
use kiln::queue::kafka::{create_topics, KafkaQueue, KafkaSettings};
use kiln_harness::host::rss_of;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{floor_python, ms, Summary};

/// Topics of their own for one measurement.
fn topics(brokers: &str, run: &str, name: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.into(),
        submissions_topic: format!("{run}.{name}.submissions"),
        results_topic: format!("{run}.{name}.results"),
        dead_letter_topic: format!("{run}.{name}.dead-letter"),
        group: format!("{run}.{name}"),
        transactional_id: Some(format!("{run}.{name}")),
        ..KafkaSettings::default()
    }
}

/// A producer for the submissions; `linger_ms` trades latency for batching.
fn producer(k: &KafkaSettings, linger_ms: u32) -> Result<BaseProducer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| e.to_string())
}

/// Produces `n` submissions (`print(1)`, stdin `1`) as fast as the producer takes them.
fn produce(k: &KafkaSettings, n: usize, first: usize) -> Result<(), String> {
    produce_with(&producer(k, 20)?, k, n, first)
}

fn produce_with(p: &BaseProducer, k: &KafkaSettings, n: usize, first: usize) -> Result<(), String> {
    for i in first..first + n {
        let id = format!("b-{i}");
        let payload =
            format!(r#"{{"id":"{id}","language":"python","source":"print(1)","stdin":"1\n"}}"#);
        loop {
            match p.send(
                BaseRecord::to(&k.submissions_topic)
                    .key(&id)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err(_) => {
                    p.poll(Duration::from_millis(5));
                }
            }
        }
    }
    // Until every record is acknowledged, in short steps (rdkafka's flush polls in 100 ms
    // steps, which would be most of a latency sample).
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return Err("submissions not acknowledged in 120 s".into());
        }
        p.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// A read_committed reader of every partition of `topic`, from its start.
fn reader(brokers: &str, topic: &str) -> Result<BaseConsumer, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.reader"))
        .set("isolation.level", "read_committed")
        // Results become visible when their transaction commits: ask again soon after.
        .set("fetch.wait.max.ms", "10")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    Ok(c)
}

/// Results per second, from the results' own timestamps (when they were produced), first to
/// last: how fast the pipe wrote them, whenever this reader gets to them.
fn results_rate(brokers: &str, topic: &str, n: usize) -> Result<f64, String> {
    let c = reader(brokers, topic)?;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < n {
        if Instant::now() > deadline {
            return Err(format!("only {seen} of {n} results in 10 minutes"));
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let t = m.timestamp().to_millis().unwrap_or(0);
            first = first.min(t);
            last = last.max(t);
            seen += 1;
        }
    }
    Ok((n - 1) as f64 / ((last - first).max(1) as f64 / 1000.0))
}

/// (a) The floor: consume, decode, produce a result, commit offsets, in transactions.
fn raw_pipe(k: &KafkaSettings, n: usize) -> Result<f64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .subscribe(&[&k.submissions_topic])
        .map_err(|e| e.to_string())?;
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("transactional.id", k.transactional_id())
        .set("linger.ms", "1")
        .create()
        .map_err(|e| e.to_string())?;
    producer
        .init_transactions(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let mut done = 0;
    let mut started = None;
    let timeout = Duration::from_secs(30);
    while done < n {
        let mut batch = Vec::new();
        while batch.len() < 1000 {
            match consumer.poll(Duration::from_millis(if batch.is_empty() {
                100
            } else {
                1
            })) {
                Some(Ok(m)) => {
                    let sub: kiln::submission::Submission =
                        serde_json::from_slice(m.payload().unwrap_or_default())
                            .map_err(|e| e.to_string())?;
                    batch.push((sub.id.unwrap_or_default(), m.partition(), m.offset()));
                }
                _ => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        started.get_or_insert_with(Instant::now);
        producer.begin_transaction().map_err(|e| e.to_string())?;
        let mut next: std::collections::HashMap<i32, i64> = Default::default();
        for (id, p, o) in &batch {
            let body =
                serde_json::json!({"id": id, "status": "accepted", "stdout": "1\n"}).to_string();
            while producer
                .send(BaseRecord::to(&k.results_topic).key(id).payload(&body))
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            let e = next.entry(*p).or_insert(0);
            *e = (*e).max(o + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&k.submissions_topic, p, Offset::Offset(o))
                .map_err(|e| e.to_string())?;
        }
        let group = consumer.group_metadata().ok_or("no group metadata")?;
        producer
            .send_offsets_to_transaction(&tpl, &group, timeout)
            .map_err(|e| e.to_string())?;
        producer
            .commit_transaction(timeout)
            .map_err(|e| e.to_string())?;
        done += batch.len();
    }
    Ok(done as f64 / started.map_or(1e-9, |s| s.elapsed().as_secs_f64()))
}

/// Runs every Kafka measurement on `brokers` and reports them.
pub async fn run(brokers: &str, settings: &Settings, n: usize) -> Result<String, String> {
    let run = format!("bench-{}-{}", std::process::id(), kiln::result::now_ms());
    let [raw, noop, py, backlog] =
        ["raw", "noop", "py", "backlog"].map(|name| topics(brokers, &run, name));
    for k in [&raw, &noop, &py, &backlog] {
        create_topics(k, 8, 1).await?;
    }
    let blocking =
        |f: Box<dyn FnOnce() -> Result<f64, String> + Send>| tokio::task::spawn_blocking(f);

    // (a) raw pipe, then Kiln with no-op pods, on the same number of submissions.
    produce(&raw, n, 0)?;
    let raw_k = raw.clone();
    blocking(Box::new(move || raw_pipe(&raw_k, n)))
        .await
        .map_err(|e| e.to_string())??;
    let (b, t) = (brokers.to_string(), raw.results_topic.clone());
    let raw_rate = blocking(Box::new(move || results_rate(&b, &t, n)))
        .await
        .map_err(|e| e.to_string())??;
    produce(&noop, n, 0)?;
    let mut noop_settings = settings.clone();
    noop_settings.kafka = noop.clone();
    noop_settings.pool_size = 256;
    noop_settings.max_parallel_jobs = 256;
    let noop_scheduler = start_scheduler(
        &noop_settings,
        Arc::new(crate::noop::NoopBackend::default()),
    )
    .await?;
    let (b, t) = (brokers.to_string(), noop.results_topic.clone());
    let kiln_rate = blocking(Box::new(move || results_rate(&b, &t, n)))
        .await
        .map_err(|e| e.to_string())??;
    drop(noop_scheduler);

    // (b) Python end to end, against the bare spawn.
    let registry = Registry::load(settings.languages_file.as_deref())?;
    let python = registry
        .find("python", None)
        .map_err(|e| e.to_string())?
        .run[0]
        .clone();
    let mut py_settings = settings.clone();
    py_settings.kafka = py.clone();
    py_settings.warm_caches = false;
    let backend = Arc::new(
        kiln::commands::startup::local_backend(&py_settings, &registry)
            .map_err(|e| e.to_string())?,
    );
    let _py_scheduler = start_scheduler(&py_settings, backend).await?;
    let runs = 100;
    let (py_k, b) = (py.clone(), brokers.to_string());
    let (latency, tput) = tokio::task::spawn_blocking(move || -> Result<(Summary, f64), String> {
        let c = reader(&b, &py_k.results_topic)?;
        let p = producer(&py_k, 0)?;
        // Warm-up: the group's first assignment and transaction.
        produce_with(&p, &py_k, 1, 1_000_000)?;
        while !matches!(c.poll(Duration::from_millis(100)), Some(Ok(_))) {}
        let mut samples = Vec::new();
        for i in 0..runs {
            let t = Instant::now();
            produce_with(&p, &py_k, 1, i)?;
            while !matches!(c.poll(Duration::from_millis(100)), Some(Ok(_))) {}
            samples.push(t.elapsed());
        }
        let batch = 400;
        let t = Instant::now();
        produce(&py_k, batch, 10_000)?;
        let mut seen = 0;
        while seen < batch {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                seen += 1;
            }
        }
        Ok((
            Summary::of(samples),
            batch as f64 / t.elapsed().as_secs_f64(),
        ))
    })
    .await
    .map_err(|e| e.to_string())??;
    let floor = floor_python(&python, runs);
    let parallel = settings.effective_max_parallel_jobs();
    let floor_tput = {
        let t = Instant::now();
        let per = 400 / parallel;
        std::thread::scope(|s| {
            for _ in 0..parallel {
                s.spawn(|| floor_python(&python, per));
            }
        });
        (per * parallel) as f64 / t.elapsed().as_secs_f64()
    };

    // (c) A scheduler's memory over a backlog of a million.
    let backlog_n = 1_000_000;
    produce(&backlog, backlog_n, 0)?;
    let rss = scheduler_rss_over_backlog(&backlog, Duration::from_secs(20))?;

    Ok(format!(
        "| measurement | value | floor | ratio |\n|---|---|---|---|\n\
         | (a) submissions/s, no-op pods vs the raw pipe ({n} each) | {kiln_rate:.0}/s | {raw_rate:.0}/s | {:.2} |\n\
         | (b) `print(1)` produced, result read (read_committed), p50 of {runs} | {} | {} (bare spawn) | +{:.2} ms |\n\
         | (b) same, throughput of 400 at {parallel} parallel jobs | {tput:.1}/s | {floor_tput:.1}/s | {:.2} |\n\
         | (c) `kiln scheduler` RSS with {backlog_n} submissions waiting | {:.1} MB | | |\n",
        kiln_rate / raw_rate,
        ms(latency.p50),
        ms(floor.p50),
        (latency.p50.as_secs_f64() - floor.p50.as_secs_f64()) * 1000.0,
        tput / floor_tput,
        rss as f64 / 1e6,
    ))
}

/// The actor tree over Kafka in this process, with `backend`'s pods. Kept alive by the value.
async fn start_scheduler(
    settings: &Settings,
    backend: Arc<dyn PodBackend>,
) -> Result<kiln::actors::tree::ActorTree, String> {
    let registry = Arc::new(Registry::load(settings.languages_file.as_deref())?);
    let metrics = Arc::new(Metrics::new());
    let k = settings.kafka.clone();
    let m = metrics.clone();
    let queue = tokio::task::spawn_blocking(move || KafkaQueue::connect(k, m))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let parts =
        kiln::commands::startup::tree_parts(settings, Arc::new(queue), backend, registry, metrics)
            .map_err(|e| e.to_string())?;
    Ok(kiln::actors::tree::ActorTree::start(parts))
}

/// Starts `kiln scheduler` over a backlog and reads its resident memory after `settle`.
fn scheduler_rss_over_backlog(k: &KafkaSettings, settle: Duration) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args([
            "scheduler",
            "--brokers",
            &k.brokers,
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KILN_KAFKA__SUBMISSIONS_TOPIC", &k.submissions_topic)
        .env("KILN_KAFKA__RESULTS_TOPIC", &k.results_topic)
        .env("KILN_KAFKA__DEAD_LETTER_TOPIC", &k.dead_letter_topic)
        .env("KILN_KAFKA__GROUP", &k.group)
        .env("KILN_KAFKA__TRANSACTIONAL_ID", k.transactional_id())
        .env("KILN_WARM_CACHES", "false")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(settle);
    let rss = rss_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok(rss)
}
