"""The lab: the AirVPN + confined qBittorrent setup on one machine, with injectable faults.

See topology.py for the layout, faults.py for the faults, cli.py for the commands.
"""
