//! The standard runs a report is made of: the scenarios `bench/run-all.sh` always ran, in the
//! same order, and a quick version of them for CI.

/// One run of the tool: its arguments (after the program name) and a rough duration.
#[derive(Debug, Clone)]
pub struct Step {
    pub args: Vec<String>,
    /// Set for a run that differs by more than its arguments (the counting-allocator server).
    pub variant: Option<&'static str>,
    pub estimate_secs: f64,
}

fn step(args: &str, estimate_secs: f64) -> Step {
    Step {
        args: args.split_whitespace().map(String::from).collect(),
        variant: None,
        estimate_secs,
    }
}

/// A scenario that measures against the in-tool ceiling first takes two windows plus setup.
fn paired(args: &str, secs: f64) -> Step {
    step(args, 2.0 * (1.0 + secs) + 4.0)
}

fn single(args: &str, secs: f64) -> Step {
    step(args, 1.0 + secs + 3.0)
}

/// The runs, with `counting` the counting-allocator server when it was built beside the tool.
pub fn steps(quick: bool, counting: Option<&str>) -> Vec<Step> {
    let mut plan = Vec::new();
    if quick {
        let d = 0.5;
        for n in [10, 100, 1000] {
            plan.push(paired(
                &format!("fanout --subscribers {n} --duration {d}"),
                d,
            ));
        }
        for p in [64, 16384] {
            plan.push(paired(
                &format!("fanout --subscribers 100 --payload {p} --duration {d}"),
                d,
            ));
        }
        plan.push(paired(
            "latency --subscribers 20 --rate 1000 --duration 1",
            1.0,
        ));
        plan.push(single(&format!("topics --topics 50 --duration {d}"), d));
        plan.push(single(&format!("slow --duration {d}"), d));
        plan.push(step(&format!("noisy --duration {d}"), 2.0 * d + 4.0));
        plan.push(step(
            &format!("hostile --attackers 20 --duration {d}"),
            d + 4.0,
        ));
        plan.push(step(
            &format!("send-cost --subscribers 20 --duration {d}"),
            d + 1.0,
        ));
        for n in [200, 500] {
            plan.push(step(&format!("conns --conns {n}"), 3.0));
        }
    } else {
        let d = 3.0;
        plan.push(paired(&format!("fanout --duration {d}"), d));
        if let Some(server) = counting {
            let mut s = paired(&format!("fanout --duration {d} --server {server}"), d);
            s.variant = Some("counting-allocator");
            plan.push(s);
        }
        for n in [10, 100, 10000] {
            plan.push(paired(
                &format!("fanout --subscribers {n} --duration {d}"),
                d,
            ));
        }
        for p in [64, 1024, 16384, 60000] {
            plan.push(paired(&format!("fanout --payload {p} --duration {d}"), d));
        }
        plan.push(paired("latency --rate 2000 --duration 10", 10.0));
        plan.push(paired(
            "latency --rate 2000 --duration 10 --busy-poll",
            10.0,
        ));
        plan.push(paired("latency --rate 10000 --duration 10", 10.0));
        plan.push(single(&format!("topics --duration {d}"), d));
        plan.push(single(&format!("slow --duration {d}"), d));
        plan.push(step("noisy --duration 5", 14.0));
        plan.push(step("hostile --attackers 100 --duration 35", 40.0));
        plan.push(step("send-cost --duration 5", 6.0));
        for n in [1000, 10000, 15000] {
            plan.push(step(&format!("conns --conns {n}"), 3.0 + n as f64 / 4000.0));
        }
    }
    // Cluster mode (issue #11): reported as not available until the tool has the scenario.
    plan.push(step("cluster --duration 3", 1.0));
    plan
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_standard_plan_covers_the_scaling_axes() {
        let plan = super::steps(false, Some("pubsub-counting"));
        let commands: Vec<String> = plan.iter().map(|s| s.args.join(" ")).collect();
        for want in [
            "fanout --subscribers 10 --duration 3",
            "fanout --subscribers 10000 --duration 3",
            "fanout --payload 60000 --duration 3",
            "latency --rate 10000 --duration 10",
            "noisy --duration 5",
            "hostile --attackers 100 --duration 35",
            "conns --conns 15000",
            "cluster --duration 3",
        ] {
            assert!(commands.iter().any(|c| c == want), "{want}");
        }
        assert_eq!(
            plan.iter().filter(|s| s.variant.is_some()).count(),
            1,
            "one counting-allocator run"
        );
        assert!(super::steps(true, None).len() < plan.len());
    }
}
