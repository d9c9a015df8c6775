#!/usr/bin/env python3
"""Writes rlhf-dashboard.json (Grafana dashboard, schema 36+) next to this file.

Edit the panel list here and re-run; the JSON is checked in so Grafana users need no
Python. Every expression uses metrics documented in docs/monitoring.md, and the
monitoring integration test checks each metric name against a live job's /metrics.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(pid, title, exprs, x, y, w=12, h=8, unit="short", description=""):
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": legend}
            for i, (e, legend) in enumerate(exprs)
        ],
    }


def q(quantile, metric, by="le"):
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket[1m])))"


PANELS = [
    ("Reward (learner batch mean)", [('rlhf_learner_train_stat{name="reward_mean"}', "reward"),
     ('rlhf_learner_train_stat{name="reward_std"}', "reward std")], "short",
     "Mean reward-model score of the trajectories in each learner step."),
    ("KL to SFT and beta", [('rlhf_learner_train_stat{name="kl_mean"}', "KL (nats/seq)"),
                            ("rlhf_launcher_kl_target_nats", "target"),
                            ('rlhf_learner_train_stat{name="beta"}', "beta")], "short",
     "Per-sequence KL of the policy to the reference, the adaptive-beta target, and beta."),
    ("Learner steps and policy version", [("rlhf_learner_steps_total", "steps"),
                                          ("rlhf_learner_policy_version", "version")], "short",
     "Optimizer steps taken and the policy version being distributed."),
    ("Losses, entropy, clip fraction, grad norm", [
        ('rlhf_learner_train_stat{name=~"policy_loss|value_loss|ptx_loss|entropy|clip_fraction|grad_norm"}',
         "{{name}}")], "short", "Learner statistics of the last step."),
    ("Throughput per component", [
        ('sum(rate(rlhf_learner_trajectories_total{outcome="trained"}[1m]))', "learner trajectories/s"),
        ("sum by (actor_id) (rate(rlhf_actor_generated_tokens_total[1m]))",
         "actor {{actor_id}} tokens/s"),
        ("sum(rate(rlhf_reward_server_sequences_total[1m]))", "reward server seq/s"),
        ("sum(rate(rlhf_reference_server_sequences_total[1m]))", "reference server seq/s"),
    ], "short", "Work done per second by each kind of process."),
    ("Request latency p50 / p99", [
        (q(0.5, "rlhf_reward_server_request_duration_seconds", "le, method"),
         "reward {{method}} p50"),
        (q(0.99, "rlhf_reward_server_request_duration_seconds", "le, method"),
         "reward {{method}} p99"),
        (q(0.5, "rlhf_reference_server_request_duration_seconds", "le, method"),
         "reference {{method}} p50"),
        (q(0.99, "rlhf_reference_server_request_duration_seconds", "le, method"),
         "reference {{method}} p99"),
    ], "s", "Server-side RPC latency from arrival to response."),
    ("Queue depths", [("rlhf_reward_server_queue_depth", "reward server"),
                      ("rlhf_reference_server_queue_depth", "reference server")], "short",
     "Sequences waiting for a batched forward pass."),
    ("Staleness", [("max(rlhf_actor_version_lag)", "max actor version lag"),
                   ("rlhf_launcher_max_staleness_versions", "bound (rl.max_staleness)"),
                   ('sum(rate(rlhf_learner_trajectories_total{outcome="dropped_stale"}[1m]))', "dropped stale/s"),
                   (q(0.9, "rlhf_learner_trajectory_staleness_versions"), "p90 staleness")],
     "short", "How many policy versions behind the actors' trajectories are."),
    ("Actors up", [("sum(rlhf_launcher_processes_up{kind=\"actor\"})", "up"),
                   ("sum(rlhf_launcher_processes_configured{kind=\"actor\"})", "configured"),
                   ("sum(increase(rlhf_launcher_restarts_total[5m]))", "restarts (5m)")],
     "short", "Actor processes running vs configured, and restarts."),
    ("Weight sync time", [(q(0.5, "rlhf_learner_weight_sync_seconds"), "learner publish p50"),
                          (q(0.99, "rlhf_learner_weight_sync_seconds"), "learner publish p99"),
                          (q(0.5, "rlhf_actor_weight_receive_seconds"), "actor receive p50"),
                          (q(0.99, "rlhf_actor_weight_receive_seconds"), "actor receive p99")], "s",
     "Time to publish a policy version (learner) and to receive and apply it (actors)."),
]


def main():
    panels = []
    for i, (title, exprs, unit, desc) in enumerate(PANELS):
        panels.append(panel(i + 1, title, exprs, x=(i % 2) * 12, y=(i // 2) * 8, unit=unit,
                            description=desc))
    dashboard = {
        "uid": "rlhf-training",
        "title": "rlhf training",
        "tags": ["rlhf"],
        "timezone": "browser",
        "schemaVersion": 36,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "label": "Prometheus", "current": {},
        }]},
        "panels": panels,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rlhf-dashboard.json")
    with open(out, "w") as f:
        json.dump(dashboard, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
