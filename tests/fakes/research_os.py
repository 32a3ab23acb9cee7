"""Sample workspace material from the seeds, shared by tests (not product)."""

# The example entry of seeds/research-os-file-backed-control-plane.md section 2.3, verbatim.
RESEARCH_OS_WORKER = """\
- worker_id: vastai_auto_20260531_003650
  instance_id: 38664456
  kind: ssh
  enabled: true
  worker_pool: vastai
  ssh:
    host: ssh1.vast.ai
    port: 24456
    user: root
    key: ~/.ssh/vastai_id_ed25519
  workspace: /root
  resources:
    gpu: 1
    disk_gb: 32
  health:
    heartbeat_command: "echo ok"
    busy_command: "pgrep -f python || true"
  notes: >-
    AUTO-RENTED at 2026-05-31 00:35:14. RTX A4000, $0.094/hr,
    DLP/$=230.8. Washington, US.
"""
