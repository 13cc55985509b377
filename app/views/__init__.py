"""The dashboard's pages: adding one is one line in ``PAGES``.

Each page is a module in ``app/views`` with a ``render(model: LoadedModel) -> None`` function;
``app/main.py`` turns ``PAGES`` into ``st.navigation`` and runs the chosen page inside the
error boundary. Page modules are imported only when their page is opened.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageEntry:
    """One page of the dashboard.

    Attributes:
        module: the module under ``app.views`` holding ``render(model)``.
        title: the title in the navigation menu.
        icon: a Material icon (``:material/name:``) or an emoji.
        section: the navigation group the page is listed under.
        default: whether the page opens first (exactly one page should be).
    """

    module: str
    title: str
    icon: str
    section: str = "Explore"
    default: bool = False

    @property
    def url_path(self) -> str:
        """The page's URL path (the module name)."""
        return self.module


#: Every page, in menu order. Later pages (attention, lens, RASP, head gating, SAE, circuits,
#: reports) are added here.
PAGES: tuple[PageEntry, ...] = (
    PageEntry("home", "Home", ":material/home:", section="Model", default=True),
    PageEntry("attention", "Attention", ":material/grid_on:", section="Explore"),
    PageEntry("lens", "Lenses", ":material/layers:", section="Explore"),
    PageEntry("head_gating", "Head gating", ":material/tune:", section="Explore"),
    PageEntry("circuits", "Circuit diffing", ":material/compare:", section="Explore"),
    PageEntry("sae_training", "SAE training", ":material/model_training:", section="SAE"),
    PageEntry("sae_features", "SAE features", ":material/feature_search:", section="SAE"),
    PageEntry("concepts", "Concept tracing", ":material/blur_on:", section="SAE"),
    PageEntry(
        "hallucination", "Hallucination predictor", ":material/psychology_alt:", section="SAE"
    ),
    PageEntry("steering", "Steering", ":material/alt_route:", section="SAE"),
    PageEntry("rasp", "RASP compiler", ":material/code:", section="Build"),
    PageEntry("programs", "Transformer Programs", ":material/terminal:", section="Build"),
    PageEntry("reports", "Reports", ":material/summarize:", section="Reports"),
)
