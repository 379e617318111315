"""personarag.evaluation"""
