//! The side-by-side table: each relay's headline figures and their ratio to Stagecast's.

use crate::memory::{IDLE_SOCKETS, per_1000_mib};
use crate::systems::{Runs, SUBSCRIBERS, THROUGHPUTS};
use crate::{ms, quantile};

/// A relay's figure in one row, if its run worked.
type Figure = fn(&Runs) -> Option<f64>;
/// A row: its label, the figure, and how to show it.
type Row = (String, Box<dyn Fn(&Runs) -> Option<f64>>, fn(f64) -> String);

/// `systems[0]` is Stagecast; every other column is compared with it.
pub fn print_summary(systems: &[Runs], peers_about: &[(&str, &str)]) {
    println!();
    println!("## Side by side: Stagecast and the peer relays");
    println!();
    println!(
        "Every relay was started by this bench on the same cores, one at a time, and driven by the same client code with the same pacing; the sections below hold each run in full. FastAPI+Redis and PartyServer verify no token and check no event beyond its id (see their READMEs), so they do less work per request than Stagecast. \"Stagecast, one workerd\" is the same edge without wrangler dev's dev proxy, the hop every other workerd figure here pays and production does not."
    );
    println!();
    for (name, about) in peers_about {
        println!("- {name}: {about}.");
    }
    println!();
    let mut header = String::from("| measure |");
    let mut rule = String::from("|---|");
    for (i, s) in systems.iter().enumerate() {
        header += &format!(" {} |", s.name);
        rule += "---:|";
        if i > 0 {
            header += &format!(" {} / Stagecast |", s.name);
            rule += "---:|";
        }
    }
    println!("{header}");
    println!("{rule}");
    let mut rows: Vec<Row> = Vec::new();
    for n in SUBSCRIBERS {
        rows.push((
            format!("p99 publish-to-delivery, {n} subscribers (ms)"),
            Box::new(move |r: &Runs| {
                let l = r.latency_with(n)?.as_ref().ok()?;
                (!l.samples.is_empty()).then(|| quantile(&l.samples, 0.99) as f64)
            }),
            |us| ms(us as u64),
        ));
    }
    for n in SUBSCRIBERS {
        rows.push((
            format!("pairs missing, {n} subscribers"),
            Box::new(move |r: &Runs| Some(r.latency_with(n)?.as_ref().ok()?.missing as f64)),
            |v| format!("{v:.0}"),
        ));
    }
    for (i, (label, _, publishers, batch)) in THROUGHPUTS.iter().enumerate() {
        let what = if *publishers == 1 {
            label.to_string()
        } else {
            format!("{publishers} publishers, {label}")
        };
        rows.push((
            format!("events/s, {what}, batches of {batch}"),
            Box::new(move |r: &Runs| Some(r.throughput.get(i)?.as_ref().ok()?.events_per_s())),
            |v| format!("{v:.0}"),
        ));
    }
    let resume: [(&str, Figure); 3] = [
        ("resume: forced drops", |r| {
            Some(r.resume.as_ref().ok()?.drops as f64)
        }),
        ("resume: events lost", |r| {
            Some(r.resume.as_ref().ok()?.lost as f64)
        }),
        ("resume: events repeated", |r| {
            Some(r.resume.as_ref().ok()?.repeated as f64)
        }),
    ];
    for (label, figure) in resume {
        rows.push((label.to_owned(), Box::new(figure), |v| format!("{v:.0}")));
    }
    rows.push((
        format!("memory per {IDLE_SOCKETS} idle sockets to one analysis, runtime (MiB)"),
        Box::new(|r: &Runs| {
            let m = r.memory.as_ref().ok()?;
            Some(per_1000_mib(
                m.baseline.runtime_kib,
                m.one_analysis.runtime_kib,
            ))
        }),
        |v| format!("{v:.1}"),
    ));
    for (label, figure, show) in &rows {
        let mine = figure(&systems[0]);
        let mut line = format!("| {label} |");
        for (i, s) in systems.iter().enumerate() {
            let theirs = figure(s);
            line += &format!(" {} |", theirs.map_or("failed".into(), show));
            if i > 0 {
                let ratio = match (theirs, mine) {
                    (Some(t), Some(m)) if m > 0.0 => format!("{:.2}x", t / m),
                    _ => "-".into(),
                };
                line += &format!(" {ratio} |");
            }
        }
        println!("{line}");
    }
}
