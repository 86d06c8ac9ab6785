"""The Okabe-Ito palette (Okabe & Ito 2008): colours that stay distinguishable for the
common kinds of colour blindness. Figures (:mod:`flowkit.views.plots`), widgets and the edge-group
registry (:mod:`flowkit.intervention.edge_groups`) take their colours from here."""

from __future__ import annotations

#: The Okabe-Ito palette, by colour name.
OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}

__all__ = ["OKABE_ITO"]
