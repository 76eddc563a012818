"""Privacy and proxies from one study; run ``python -m experiments.privacy_and_proxies``."""
