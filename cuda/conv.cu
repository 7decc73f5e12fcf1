// conv.cu
#include "common.cuh"
