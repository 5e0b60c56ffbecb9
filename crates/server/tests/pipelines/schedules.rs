//! Cron schedules on a manual clock, and `max_active_runs`.

use super::*;

#[tokio::test]
async fn a_cron_schedule_fires_at_its_instants_on_a_manual_clock() {
    // 2027-01-14 23:59:30 UTC: the next quarter hours are 00:00, 00:15, ...
    let midnight: i64 = 1_800_000_000_000 / 86_400_000 * 86_400_000 + 86_400_000;
    let clock = Arc::new(ManualClock::new(midnight - 30_000));
    let c = clock.clone();
    let ts = TestServer::with_config(move |cfg| cfg.clock = Some(c as Arc<dyn Clock>)).await;
    let alice = setup(&ts).await;
    let file = "\
name: quarter
schedule: {cron: '*/15 * * * *'}
max_active_runs: 10
steps:
  - {name: s, command: ['true']}
";
    let p = apply(&ts, &alice, file).await;
    assert_eq!(p.next_run_at, Some(midnight));
    let runs = async || -> Vec<PipelineRun> {
        ts.get(&alice, &format!("{P}/quarter/runs?limit=100")).send().await.unwrap().json().await.unwrap()
    };
    let step_to = async |to: i64| {
        while clock.now_ms() < to {
            clock.advance(60_000.min(to - clock.now_ms()));
            ts.server.schedule_checked(clock.now_ms()).await;
        }
    };
    step_to(midnight + 3_600_000 - 30_000).await;
    let mut got = runs().await;
    got.reverse();
    let at: Vec<i64> = got.iter().map(|r| r.scheduled_for.unwrap()).collect();
    let quarter = 15 * 60_000;
    assert_eq!(at, [midnight, midnight + quarter, midnight + 2 * quarter, midnight + 3 * quarter]);
    assert!(got.iter().all(|r| r.trigger == "schedule"));
    assert_eq!(got.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3, 4]);

    // Paused: nothing fires; a manual run is refused until it is resumed.
    let r = ts.post(&alice, &format!("{P}/quarter/pause")).send().await.unwrap();
    let paused: Pipeline = r.json().await.unwrap();
    assert!(paused.paused && paused.next_run_at.is_none());
    step_to(clock.now_ms() + 3_600_000).await;
    assert_eq!(runs().await.len(), 4);
    assert_error(start_with(&ts, &alice, "quarter", &StartRun::default()).await, StatusCode::CONFLICT, "resume").await;

    // Resumed, then a long gap: without catch-up, one run for the latest instant.
    let r = ts.post(&alice, &format!("{P}/quarter/resume")).send().await.unwrap();
    assert!(!r.json::<Pipeline>().await.unwrap().paused);
    ts.server.schedule_checked(clock.now_ms()).await;
    assert_eq!(runs().await.len(), 4, "what fell due while paused is not run");
    let before = clock.now_ms();
    clock.advance(10 * 3_600_000);
    ts.server.schedule_checked(clock.now_ms()).await;
    let got = runs().await;
    assert_eq!(got.len(), 5);
    let latest = (before + 10 * 3_600_000) / quarter * quarter;
    assert_eq!(got[0].scheduled_for, Some(latest));
}

#[tokio::test]
async fn scheduled_instants_are_skipped_while_max_active_runs_are_active() {
    let clock = manual_clock();
    let c = clock.clone();
    let ts = TestServer::with_config(move |cfg| cfg.clock = Some(c as Arc<dyn Clock>)).await;
    let alice = setup(&ts).await;
    let file = "name: busy\nschedule: {cron: '* * * * *'}\nsteps:\n  - {name: s, command: ['true']}\n";
    apply(&ts, &alice, file).await;
    for _ in 0..3 {
        clock.advance(60_000);
        ts.server.schedule_checked(clock.now_ms()).await;
    }
    let runs: Vec<PipelineRun> = ts.get(&alice, &format!("{P}/busy/runs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(runs.len(), 1, "max_active_runs is 1 by default: later instants were skipped");
    assert_error(start_with(&ts, &alice, "busy", &StartRun::default()).await, StatusCode::CONFLICT, "max_active_runs")
        .await;
}
