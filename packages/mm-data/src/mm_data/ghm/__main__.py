"""``python -m mm_data.ghm``: print the Bayes risks of the four tasks for some tree seeds."""

from mm_data.ghm.bayes import _main

_main()
