"""Point data sets: CSV tables (:mod:`.csv`) and 2-D toy distributions (:mod:`.generators`)."""

from genmodels.data.csv import *  # noqa: F403
from genmodels.data.generators import *  # noqa: F403
