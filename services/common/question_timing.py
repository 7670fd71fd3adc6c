"""Published human seconds per question type: the dialog's cost priors and the simulated annotator's
timing model both start from these, so the deployed policy and its simulations never drift apart.

Konyushkova, Uijlings, Lampert, Ferrari, "Learning Intelligent Dialogs for Bounding Box Annotation",
CVPR 2018, timing model.
"""

VERIFY_S = 1.8
VERIFY_SOURCE = ("Konyushkova et al., CVPR 2018, timing model: answering a verification question 1.8 s "
                 "(Papadopoulos et al., CVPR 2016)")
BOX_S = 7.0
BOX_SOURCE = ("Konyushkova et al., CVPR 2018, timing model: drawing a box by extreme clicking 7 s "
              "(Papadopoulos et al., ICCV 2017)")
# Expected seconds of the first click (finding the object included) and of each further click, of the
# simulated annotator's model with its typical profile at a 200 px movement
# (``services.simulation.timing.expected_click_s``; tests/simulation/test_timing.py keeps them equal).
FIRST_CLICK_S = 2.346
CLICK_S = 2.044
