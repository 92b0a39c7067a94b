use super::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_795_305_600_000;

fn req(prompt_risk: f64, max_risk: f64, shape: u32) -> RequestSignal {
    RequestSignal { prompt_risk, max_risk, shape }
}

/// A benign developer working on security code: a blocked candidate in one request of five,
/// varied code, no harmful prompts; 12 requests an hour for a day.
fn benign(cfg: &AbuseConfig, start: i64) -> Usage {
    let mut u = Usage::default();
    for k in 0..288 {
        let blocked = if k % 5 == 0 { 0.95 } else { 0.2 };
        u.observe(cfg, &req(0.0, blocked, k as u32), start + k * 5 * MIN);
    }
    u
}

/// An abuser flooding exploit-seeking prompts, rephrased (same shape) three times in four.
fn flood(cfg: &AbuseConfig, u: &mut Usage, start: i64, n: i64) {
    for k in 0..n {
        let shape = if k % 4 == 0 { k as u32 } else { 42 };
        u.observe(cfg, &req(0.8, 0.97, shape), start + k * 1000);
    }
}

#[test]
fn median_and_mad_resist_outliers() {
    let mut xs = vec![1.0, 2.0, 3.0, 4.0, 1000.0];
    let r = Robust::of(&mut xs, 0.0);
    assert_eq!(r.median, 3.0);
    assert!((r.scale - 1.4826).abs() < 1e-9, "MAD of |x-3| = [2,1,0,1,997] is 1: {}", r.scale);
    let mut even = vec![4.0, 1.0, 3.0, 2.0];
    assert_eq!(median(&mut even), 2.5);
    assert_eq!(median(&mut []), 0.0);
}

#[test]
fn robust_z_scores_hand_computed() {
    let pop = Population::reference();
    // 100 requests, 50 risky: share (50 + 5·0.02)/105 ≈ 0.4771; z = (0.4771 − 0.02)/0.1 ≈ 4.57.
    let u = Usage { requests: 100.0, risky: 50.0, at_ms: T0, ..Usage::default() };
    let a = assess(&AbuseConfig::default(), &pop, &u, T0);
    assert!((a.z.risky - 4.5714).abs() < 1e-3, "{}", a.z.risky);
    // log(101) vs log(51) over a scale of 1: 0.683; score = 4.571 + 0.5·0.683 + 0.5·z_blocked(−0.3 → 0) + z_repeats(<0 → 0).
    assert!((a.score - (a.z.risky + 0.5 * a.z.log_rate)).abs() < 1e-9);
    // Trust: 1 − (4.91 − 3)/6 ≈ 0.68.
    assert!((a.trust - (1.0 - (a.score - 3.0) / 6.0)).abs() < 1e-9);
}

#[test]
fn a_flood_of_exploit_prompts_loses_trust_while_benign_security_work_keeps_it() {
    let cfg = AbuseConfig::default();
    let pop = Population::reference();
    let good = benign(&cfg, T0);
    let end = T0 + 288 * 5 * MIN;
    assert_eq!(trust(&cfg, &pop, &good, end), 1.0, "{:?}", assess(&cfg, &pop, &good, end));
    let mut bad = Usage::default();
    flood(&cfg, &mut bad, T0, 200);
    let a = assess(&cfg, &pop, &bad, T0 + 200_000);
    assert_eq!(a.trust, 0.0, "{a:?}");
    assert!(explain(&a).contains("ask for harmful code"), "{}", explain(&a));
}

#[test]
fn trust_recovers_when_the_behaviour_stops_and_when_it_turns_normal() {
    let cfg = AbuseConfig::default();
    let pop = Population::reference();
    let mut u = Usage::default();
    flood(&cfg, &mut u, T0, 200);
    let t: Vec<f64> = [0, 12, 24, 48, 72].iter().map(|h| trust(&cfg, &pop, &u, T0 + h * HOUR)).collect();
    assert_eq!(t[0], 0.0);
    assert!(t.windows(2).all(|w| w[1] >= w[0]), "{t:?}");
    assert_eq!(t[4], 1.0, "idle for 3 days (12 half-lives): {t:?}");
    // Or: behaviour turns normal a few hours later.
    let mut v = Usage::default();
    flood(&cfg, &mut v, T0, 200);
    let later = T0 + 6 * HOUR;
    for k in 0..400 {
        v.observe(&cfg, &req(0.0, 0.1, k), later + i64::from(k) * 2 * MIN);
    }
    assert_eq!(trust(&cfg, &pop, &v, later + 800 * MIN), 1.0, "{:?}", assess(&cfg, &pop, &v, later + 800 * MIN));
}

#[test]
fn the_population_decides_what_is_normal() {
    let cfg = AbuseConfig { min_population: 10, ..AbuseConfig::default() };
    // A population of pen-testers: 60 % risky prompts is their normal.
    let users: Vec<Usage> = (0..40)
        .map(|k| Usage { requests: 100.0, risky: 55.0 + k as f32 / 4.0, at_ms: T0, ..Usage::default() })
        .collect();
    let pop = Population::compute(&cfg, users.iter(), T0);
    assert_eq!(pop.users, 40);
    assert!((pop.risky.median - 0.6).abs() < 0.01, "{pop:?}");
    assert_eq!(trust(&cfg, &pop, &users[0], T0), 1.0);
    // Too few active users: the reference.
    let few = Population::compute(&cfg, users.iter().take(3), T0);
    assert_eq!(few.users, 0);
    assert_eq!(few.risky, Population::reference().risky);
    // Order does not matter.
    let rev = Population::compute(&cfg, users.iter().rev(), T0);
    assert_eq!(rev, pop);
}

#[test]
fn near_identical_requests_share_a_shape() {
    let a: Vec<u32> = (0..100).collect();
    let mut b = a.clone();
    b[99] = 5000;
    let c: Vec<u32> = (1000..1100).collect();
    let s = |f: &[u32], r: f64| shape(r, std::iter::once(f));
    assert_eq!(s(&a, 0.8), s(&a, 0.8));
    assert_ne!(s(&a, 0.8), s(&a, 0.0), "the prompt risk bucket is part of the shape");
    assert_ne!(s(&a, 0.8), s(&c, 0.8));
    // Jaccard 99/101: the same MinHash unless the changed coordinate held the minimum.
    let min = |f: &[u32]| f.iter().map(|i| mix(u64::from(*i))).min();
    assert_eq!(s(&a, 0.8) == s(&b, 0.8), min(&a) == min(&b));
}
