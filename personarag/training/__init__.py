"""personarag.training"""
