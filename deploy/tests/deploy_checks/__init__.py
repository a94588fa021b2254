"""The checks of deploy/tests/check-deploy.py, one module per part of deploy/: dockerfile,
systemd, kubernetes, monitoring (Prometheus and Grafana); common has what they share (check(),
the live server, the settings and the pools' arithmetic)."""
