"""Speech encoders, connectors, the SpeechLLMModel and speech-text interleaving."""
