"""The main job: a yard with two real models, served and called over HTTP."""
