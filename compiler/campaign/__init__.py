"""Cross-hardware campaigns: one TOML file, every machine, one results folder and report.

    from vlc.campaign import load_campaign, run_local, run_cluster
    campaign = load_campaign("examples/campaign.toml")
    summary = run_local(campaign)                       # every cell here, as `vlc bench`
    summary = run_cluster(campaign, "10.0.0.1:6379")    # each cell on a Ray node offering its `requires`

`vlc campaign run FILE [--cluster ADDRESS] [--report]` and `vlc worker start` drive these.
"""

from vlc.campaign.runner import CampaignSummary, run_cluster, run_local
from vlc.campaign.spec import Campaign, RunSpec, load_campaign, parse_campaign

__all__ = ["Campaign", "CampaignSummary", "RunSpec", "load_campaign", "parse_campaign", "run_cluster",
           "run_local"]
